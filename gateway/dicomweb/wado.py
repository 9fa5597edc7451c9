"""WADO-RS (PS3.18 10.4) over the embedded store: instances, metadata, frames, bulk data.

Everything is streamed from disk: instances in 1 MiB chunks, metadata one instance at a
time, frames by seeking to their offset in the Pixel Data value, so serving a study never
holds it in memory. Instances are sent in their stored transfer syntax (no transcoding): a
request for another explicit transfer syntax is answered 406.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
from pydicom.encaps import generate_frames
from pydicom.tag import Tag
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.dicomweb.errors import DicomWebError
from gateway.dicomweb.metadata import header_to_json
from gateway.dicomweb.multipart import MediaType
from gateway.dicomweb.urls import dicomweb_root
from gateway.store import EmbeddedStore, InstanceRecord
from gateway.store.part10 import DEFER_SIZE
from gateway.store.uids import is_valid_uid

_CHUNK = 1024 * 1024


def _records(request: Request) -> list[InstanceRecord]:
    store: EmbeddedStore = request.app.state.store
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


def _accepted(request: Request, part_type: str) -> MediaType | None:
    """The acceptable multipart media range for ``part_type``, or None for any; else 406."""
    accept = request.headers.get("accept", "*/*")
    for candidate in accept.split(","):
        media = MediaType(candidate)
        if media.mime in ("*/*", "multipart/*"):
            return None
        if media.mime == "multipart/related":
            wanted = media.params.get("type", part_type).lower()
            if wanted in (part_type, "*/*"):
                return media
        if media.mime == part_type:
            return media
    raise DicomWebError(406, f'this resource is available as multipart/related; type="{part_type}"')


def _check_transfer_syntax(media: MediaType | None, records: list[InstanceRecord]) -> None:
    wanted = media.params.get("transfer-syntax") if media else None
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
    """Study, series or instance as ``multipart/related; type="application/dicom"``."""
    store: EmbeddedStore = request.app.state.store
    media = _accepted(request, "application/dicom")
    records = _records(request)
    _check_transfer_syntax(media, records)
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


async def retrieve_metadata(request: Request) -> Response:
    """Instance headers as a DICOM JSON array, bulk data by BulkDataURI."""
    store: EmbeddedStore = request.app.state.store
    records = _records(request)
    base = dicomweb_root(request)

    def body() -> Iterator[bytes]:
        yield b"["
        for index, record in enumerate(records):
            instance_url = (
                f"{base}/studies/{record.study_instance_uid}/series/"
                f"{record.series_instance_uid}/instances/{record.sop_instance_uid}"
            )
            dataset = pydicom.dcmread(store.path_of(record.path), stop_before_pixels=True)
            attributes = header_to_json(dataset, _bulk_data_uri_maker(instance_url))
            if record.number_of_frames is not None or "Rows" in dataset:
                attributes["7FE00010"] = {
                    "vr": "OB" if _encapsulated(record.transfer_syntax_uid) else "OW",
                    "BulkDataURI": f"{instance_url}/bulkdata/7FE00010",
                }
            yield (b"," if index else b"") + json.dumps(attributes, separators=(",", ":")).encode()
        yield b"]"

    return StreamingResponse(body(), media_type="application/dicom+json")


def _bulk_data_uri_maker(instance_url: str) -> Callable[[str], str]:
    def bulk_data_uri(tag: str) -> str:
        return f"{instance_url}/bulkdata/{tag}"

    return bulk_data_uri


def _encapsulated(transfer_syntax_uid: str) -> bool:
    return pydicom.uid.UID(transfer_syntax_uid).is_compressed


async def retrieve_frames(request: Request) -> Response:
    """Frames of one instance, ``multipart/related; type="application/octet-stream"``."""
    store: EmbeddedStore = request.app.state.store
    media = _accepted(request, "application/octet-stream")
    record = _records(request)[0]
    try:
        numbers = [int(n) for n in request.path_params["frames"].split(",")]
    except ValueError:
        raise DicomWebError(
            400, "frame numbers must be a comma-separated list of integers"
        ) from None
    if not numbers or min(numbers) < 1:
        raise DicomWebError(400, "frame numbers start at 1")
    wanted_syntax = media.params.get("transfer-syntax") if media else None
    compressed = _encapsulated(record.transfer_syntax_uid)
    if compressed and wanted_syntax != "*" and wanted_syntax != record.transfer_syntax_uid:
        raise DicomWebError(
            406,
            f"frames are stored compressed ({record.transfer_syntax_uid}); ask with "
            "transfer-syntax=* or that transfer syntax (the gateway does not decompress)",
        )
    path = store.path_of(record.path)
    frames = _frame_reader(path, compressed, numbers)
    boundary = uuid.uuid4().hex
    content_type = f"application/octet-stream; transfer-syntax={record.transfer_syntax_uid}"
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
    store: EmbeddedStore = request.app.state.store
    record = _records(request)[0]
    tag_text = request.path_params["tag"]
    try:
        tag = int(tag_text, 16)
    except ValueError:
        raise DicomWebError(400, f"{tag_text!r} is not a tag (8 hex digits)") from None
    dataset = pydicom.dcmread(store.path_of(record.path), defer_size=DEFER_SIZE)
    value = _find_value(dataset, tag)
    if value is None:
        raise DicomWebError(404, f"the instance has no bulk data at {tag_text}")
    boundary = uuid.uuid4().hex
    return StreamingResponse(
        _multipart(iter([("application/octet-stream", iter([value]))]), boundary),
        media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
    )


def _find_value(dataset: pydicom.Dataset, tag: int) -> bytes | None:
    if tag in dataset:
        value = dataset[tag].value
        return value if isinstance(value, bytes) else None
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                found = _find_value(item, tag)
                if found is not None:
                    return found
    return None
