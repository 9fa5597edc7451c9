"""WADO-RS (PS3.18 10.4) over the embedded store: instances, metadata, frames, bulk data.

Everything is streamed from disk: instances in 1 MiB chunks, metadata one instance at a
time, frames by seeking to their offset in the Pixel Data value, so serving a study never
holds it in memory. Instances are sent in their stored transfer syntax (no transcoding): a
request for another explicit transfer syntax is answered 406.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import structlog
from pydicom.encaps import generate_frames
from pydicom.tag import Tag
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.dicomweb.errors import DicomWebError
from gateway.dicomweb.json_model import element
from gateway.dicomweb.negotiation import BulkChoice, choose_bulk, require_json
from gateway.dicomweb.stores import store_of
from gateway.dicomweb.urls import dicomweb_root
from gateway.store import EmbeddedStore, InstanceRecord
from gateway.store.instance_json import ROOT_MARK, encapsulated, instance_url, metadata_json
from gateway.store.part10 import DEFER_SIZE
from gateway.store.uids import is_valid_uid

log = structlog.get_logger(__name__)

_CHUNK = 1024 * 1024


def held_records(request: Request) -> list[InstanceRecord]:
    store = store_of(request)
    uids = [request.path_params.get(name) for name in ("study", "series", "instance")]
    for name, uid in zip(("study", "series", "instance"), uids, strict=True):
        if uid is not None and not is_valid_uid(uid):
            raise DicomWebError(400, f"the {name} UID in the URL is not a valid UID")
    study, series, instance = uids
    assert study is not None
    records = store.catalog.instances(study, series, instance)
    if not records:
        raise DicomWebError(
            404, "no such " + ("instance" if instance else "series" if series else "study")
        )
    return records


def _check_transfer_syntax(choice: BulkChoice, records: list[InstanceRecord]) -> None:
    wanted = choice.transfer_syntax
    if not wanted or wanted == "*":
        return
    for record in records:
        if record.transfer_syntax_uid != wanted:
            raise DicomWebError(
                406,
                f"instance {record.sop_instance_uid} is stored as {record.transfer_syntax_uid}; "
                "the gateway does not transcode (ask with transfer-syntax=*)",
            )


def _multipart(parts: Iterator[tuple[str, Iterator[bytes]]], boundary: str) -> Iterator[bytes]:
    for content_type, body in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1")
        yield from body
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


async def retrieve_instances(request: Request) -> Response:
    """Study, series or instance as ``multipart/related; type="application/dicom"``; one
    instance also as a single ``application/dicom`` part when that is what is accepted."""
    store = store_of(request)
    one_instance = "instance" in request.path_params
    choice = choose_bulk(request, "application/dicom", single_part_allowed=one_instance)
    records = held_records(request)
    _check_transfer_syntax(choice, records)
    if choice.single_part:
        record = records[0]
        return StreamingResponse(
            _file_chunks(store.path_of(record.path)),
            media_type=f"application/dicom; transfer-syntax={record.transfer_syntax_uid}",
            headers={"Content-Length": str(record.size)},
        )
    boundary = uuid.uuid4().hex
    parts = (
        (
            f"application/dicom; transfer-syntax={record.transfer_syntax_uid}",
            _file_chunks(store.path_of(record.path)),
        )
        for record in records
    )
    return StreamingResponse(
        _multipart(parts, boundary),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


_ROOT_MARK = ROOT_MARK.encode()


async def retrieve_metadata(request: Request) -> Response:
    """Instance headers as a DICOM JSON array, bulk data by BulkDataURI.

    Each instance's metadata is built at ingest and kept (:meth:`Catalog.instance_metadata`);
    the files are read only for instances without it. A series with such instances has its
    whole metadata kept in one row once asked for or stable, until the series changes
    (:meth:`Catalog.series_metadata`); study-level requests use it per series.
    """
    store = store_of(request)
    require_json(request)
    whole_series = request.path_params.get("instance") is None
    # Read before the instances are listed: an instance committed in between then leaves the
    # kept bytes with an older stamp than the series', rebuilt at the next request; read after,
    # bytes without it would carry the new stamp and be served until the series next changes.
    stamps = (
        store.catalog.series_updated_at(
            request.path_params["study"], request.path_params.get("series")
        )
        if whole_series
        else {}
    )
    records = held_records(request)
    root = dicomweb_root(request).encode()

    def body() -> Iterator[bytes]:
        yield b"["
        first = True
        for series_records in _by_series(records):
            stamp = stamps.get(series_records[0].series_instance_uid)
            for piece in (
                _series_metadata(store, series_records, stamp)
                if whole_series
                else _metadata_items(store, series_records, ROOT_MARK, [])
            ):
                yield (b"" if first else b",") + piece.replace(_ROOT_MARK, root)
                first = False
        yield b"]"

    return StreamingResponse(body(), media_type="application/dicom+json")


def keep_series_metadata(store: EmbeddedStore, study_uid: str, series_uids: list[str]) -> None:
    """Build and keep the series' metadata ahead of any request (the series became stable), so
    that a viewer's first request reads one row instead of every file. Only instances stored
    without their metadata (by a gateway before catalog schema 5) need it: a series whose every
    instance has its own is a concatenation of them, kept once already."""
    for series_uid in series_uids:
        stamps = store.catalog.series_updated_at(study_uid, series_uid)  # before the records
        records = store.catalog.instances(study_uid, series_uid)
        if records and series_uid in stamps:
            for _ in _series_metadata(store, records, stamps[series_uid]):
                pass


def _by_series(records: list[InstanceRecord]) -> Iterator[list[InstanceRecord]]:
    """The records (in series order, as the catalog gives them) grouped by series."""
    group: list[InstanceRecord] = []
    for record in records:
        if group and record.series_instance_uid != group[0].series_instance_uid:
            yield group
            group = []
        group.append(record)
    if group:
        yield group


def _series_metadata(
    store: EmbeddedStore, records: list[InstanceRecord], updated_at: float | None
) -> Iterator[bytes]:
    """The series' items: those kept if the series has not changed since ``updated_at`` (read
    before ``records`` were), else those of its instances, kept for the series when some had
    to be built from their files (a concatenation of the instances' own is not kept twice)."""
    series = records[0].series_instance_uid
    if updated_at is not None:
        kept = store.catalog.series_metadata(series, updated_at)
        if kept is not None:
            yield kept
            return
    unreadable: list[str] = []
    read: list[str] = []
    items: list[bytes] = []
    for item in _metadata_items(store, records, ROOT_MARK, unreadable, read):
        items.append(item)
        yield item
    if updated_at is not None and read and not unreadable:
        with store.catalog.transaction() as writer:
            writer.keep_series_metadata(series, updated_at, len(items), b",".join(items))


def _metadata_items(
    store: EmbeddedStore,
    records: list[InstanceRecord],
    base: str,
    unreadable: list[str],
    read: list[str] | None = None,
) -> Iterator[bytes]:
    """Each record's DICOM JSON (records of one series), as kept at ingest or else built from
    its file; the UIDs of the files read are added to ``read``, of those that could not be
    read to ``unreadable``."""
    kept = (
        store.catalog.instance_metadata(
            records[0].series_instance_uid,
            records[0].sop_instance_uid if len(records) == 1 else None,
        )
        if records
        else {}
    )
    for record in records:
        if base == ROOT_MARK and record.sop_instance_uid in kept:
            yield kept[record.sop_instance_uid]
            continue
        url = instance_url(
            base, record.study_instance_uid, record.series_instance_uid, record.sop_instance_uid
        )
        if read is not None:
            read.append(record.sop_instance_uid)
        try:
            metadata = _instance_metadata(store, record, url)
        except Exception:
            # The 200 and the first instances are on the wire: a failure here would cut
            # the array short. One unreadable file gives what the catalog knows of it.
            log.exception("wado.metadata_unreadable", sop_instance_uid=record.sop_instance_uid)
            unreadable.append(record.sop_instance_uid)
            metadata = json.dumps(_catalog_metadata(record, url), separators=(",", ":")).encode()
        yield metadata


def _instance_metadata(store: EmbeddedStore, record: InstanceRecord, url: str) -> bytes:
    """The instance's metadata built from its file (:func:`metadata_json`)."""
    dataset = pydicom.dcmread(store.path_of(record.path), stop_before_pixels=True)
    built = metadata_json(
        dataset,
        record.transfer_syntax_uid,
        url,
        lambda: record.number_of_frames is not None or "Rows" in dataset,
    )
    assert built is not None  # read whole: nothing deferred
    return built


def _catalog_metadata(record: InstanceRecord, instance_url: str) -> dict[str, Any]:
    """The attributes the catalog holds of an instance whose file cannot be read."""
    return {
        "00080016": element("UI", record.sop_class_uid),
        "00080018": element("UI", record.sop_instance_uid),
        "00081190": element("UR", instance_url),
        "0020000D": element("UI", record.study_instance_uid),
        "0020000E": element("UI", record.series_instance_uid),
    }


async def retrieve_frames(request: Request) -> Response:
    """Frames of one instance, ``multipart/related; type="application/octet-stream"``; one
    frame also as a single ``application/octet-stream`` part when that is what is accepted."""
    store = store_of(request)
    try:
        numbers = [int(n) for n in request.path_params["frames"].split(",")]
    except ValueError:
        raise DicomWebError(
            400, "frame numbers must be a comma-separated list of integers"
        ) from None
    if not numbers or min(numbers) < 1:
        raise DicomWebError(400, "frame numbers start at 1")
    choice = choose_bulk(request, "application/octet-stream", len(numbers) == 1)
    record = held_records(request)[0]
    wanted_syntax = choice.transfer_syntax
    compressed = encapsulated(record.transfer_syntax_uid)
    if compressed is None:
        raise DicomWebError(
            406,
            f"instance {record.sop_instance_uid} is stored in transfer syntax "
            f"{record.transfer_syntax_uid}, which the gateway does not know, so its frames "
            "cannot be cut out of it; retrieve the whole instance (transfer-syntax=*)",
        )
    if compressed and wanted_syntax != "*" and wanted_syntax != record.transfer_syntax_uid:
        raise DicomWebError(
            406,
            f"frames are stored compressed ({record.transfer_syntax_uid}); ask with "
            "transfer-syntax=* or that transfer syntax (the gateway does not decompress)",
        )
    path = store.path_of(record.path)
    frames = _frame_reader(path, compressed, numbers)
    content_type = f"application/octet-stream; transfer-syntax={record.transfer_syntax_uid}"
    if choice.single_part:
        return Response(frames[0], media_type=content_type)
    boundary = uuid.uuid4().hex
    parts = ((content_type, iter([frame])) for frame in frames)
    return StreamingResponse(
        _multipart(parts, boundary),
        media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
    )


def _frame_reader(path: Path, compressed: bool, numbers: list[int]) -> list[bytes]:
    dataset = pydicom.dcmread(path, defer_size=DEFER_SIZE)
    if "PixelData" not in dataset:
        raise DicomWebError(404, "the instance has no pixel data")
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    missing = [n for n in numbers if n > count]
    if missing:
        raise DicomWebError(404, f"frame {missing[0]} does not exist (the instance has {count})")
    if compressed:
        all_frames = list(generate_frames(dataset.PixelData, number_of_frames=count))
        return [all_frames[n - 1] for n in numbers]
    raw = dataset._dict[Tag(0x7FE00010)]
    frame_bits = (
        int(dataset.Rows)
        * int(dataset.Columns)
        * int(dataset.get("SamplesPerPixel", 1))
        * int(dataset.BitsAllocated)
    )
    if frame_bits % 8:
        raise DicomWebError(
            406, "frames of bit-packed pixel data are not served; retrieve the instance"
        )
    frame_size = frame_bits // 8
    offset = getattr(raw, "value_tell", None)
    if offset is None:
        raise DicomWebError(500, "pixel data position unknown")
    frames = []
    with open(path, "rb") as handle:
        for number in numbers:
            handle.seek(offset + (number - 1) * frame_size)
            frames.append(handle.read(frame_size))
    return frames


async def retrieve_bulk_data(request: Request) -> Response:
    """One bulk data element's value (the first with that tag, top level first)."""
    store = store_of(request)
    choice = choose_bulk(request, "application/octet-stream", single_part_allowed=True)
    record = held_records(request)[0]
    tag_text = request.path_params["tag"]
    try:
        tag = int(tag_text, 16)
    except ValueError:
        raise DicomWebError(400, f"{tag_text!r} is not a tag (8 hex digits)") from None
    dataset = pydicom.dcmread(store.path_of(record.path), defer_size=DEFER_SIZE)
    value = _find_value(dataset, tag)
    if value is None:
        raise DicomWebError(404, f"the instance has no bulk data at {tag_text}")
    if choice.single_part:
        return Response(value, media_type="application/octet-stream")
    boundary = uuid.uuid4().hex
    return StreamingResponse(
        _multipart(iter([("application/octet-stream", iter([value]))]), boundary),
        media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
    )


def _find_value(dataset: pydicom.Dataset, tag: int) -> bytes | None:
    if tag in dataset:
        value = dataset[tag].value
        return value if isinstance(value, bytes) else None
    for data_element in dataset:
        if data_element.VR == "SQ":
            for item in data_element.value:
                found = _find_value(item, tag)
                if found is not None:
                    return found
    return None
