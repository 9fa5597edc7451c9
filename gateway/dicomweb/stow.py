"""STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{StudyInstanceUID}]``.

The body is parsed while it arrives; each part is written to a temporary file as its bytes
come in, then checked and published by a worker thread while the next part is received, so
reception and disk work overlap and memory stays bounded. The response is sent only after
every stored instance is durable and catalogued.

Status codes (PS3.18 10.5.3): 200 all stored; 202 some failed or stored with warnings;
409 none stored; 400 malformed multipart; 415 not ``multipart/related`` of
``application/dicom``; 413 body over ``ingest.max_request_bytes``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.dicomweb.errors import DicomWebError
from gateway.dicomweb.json_model import stow_response
from gateway.dicomweb.multipart import MediaType, MultipartError, MultipartParser
from gateway.dicomweb.urls import dicomweb_root
from gateway.metrics import STORED_BYTES, STORED_INSTANCES, STOW_FAILURES
from gateway.store import EmbeddedStore, FailureReason, IngestBatch, IngestOutcome
from gateway.store.uids import is_valid_uid

log = structlog.get_logger(__name__)

# Parts finished but not yet checked; past this, reception waits for the disk.
_QUEUE_DEPTH = 8
# Commit (fsync directories, one catalog transaction, observers) at least this often, so
# memory for pending headers stays bounded in a very large request.
_COMMIT_EVERY = 64


class _PartWriter:
    """Parser callbacks: write each part's body to its own temporary file."""

    def __init__(self, store: EmbeddedStore, max_instance_bytes: int):
        self.store = store
        self.max_instance_bytes = max_instance_bytes
        self.finished: list[tuple[Path | None, FailureReason | None, str]] = []
        self._path: Path | None = None
        self._handle: BinaryIO | None = None
        self._size = 0
        self._failure: tuple[FailureReason, str] | None = None

    def part_begin(self, headers: dict[str, str]) -> None:
        self._size = 0
        self._failure = None
        content_type = headers.get("content-type")
        if content_type is not None and MediaType(content_type).mime != "application/dicom":
            self._failure = (
                FailureReason.CANNOT_UNDERSTAND,
                f"part media type {MediaType(content_type).mime} is not application/dicom",
            )
            return
        self._path, self._handle = self.store.layout.new_temporary()

    def part_data(self, data: bytes) -> None:
        self._size += len(data)
        if self._handle is None:
            return
        if self._size > self.max_instance_bytes:
            self._discard()
            self._failure = (
                FailureReason.OUT_OF_RESOURCES,
                f"instance larger than the limit of {self.max_instance_bytes} bytes",
            )
            return
        self._handle.write(data)

    def part_end(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self.finished.append((self._path, None, ""))
        else:
            reason, comment = self._failure or (FailureReason.CANNOT_UNDERSTAND, "empty part")
            self.finished.append((None, reason, comment))
        self._path = None

    def _discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def abort(self) -> None:
        """The request ended mid-part: the half-received part never becomes visible."""
        self._discard()
        for path, _, _ in self.finished:
            if path is not None:
                path.unlink(missing_ok=True)
        self.finished.clear()


def check_media_type(content_type: str | None) -> str:
    """The boundary of a STOW-RS body, or a 415/400 DicomWebError."""
    if not content_type:
        raise DicomWebError(415, "STOW-RS needs Content-Type multipart/related")
    media = MediaType(content_type)
    if media.mime != "multipart/related":
        raise DicomWebError(
            415, f'STOW-RS needs multipart/related; type="application/dicom", not {media.mime}'
        )
    part_type = media.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise DicomWebError(
            415, f"only application/dicom parts are supported, not type={part_type}"
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise DicomWebError(400, "the multipart/related Content-Type has no boundary")
    return boundary


async def store_instances(request: Request) -> Response:
    """The STOW-RS endpoint, at study level or for any study."""
    store: EmbeddedStore = request.app.state.store
    settings = request.app.state.settings.ingest
    study_uid = request.path_params.get("study")
    if study_uid is not None and not is_valid_uid(study_uid):
        raise DicomWebError(400, "the StudyInstanceUID in the URL is not a valid UID")
    boundary = check_media_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_request_bytes:
        raise DicomWebError(413, f"request larger than {settings.max_request_bytes} bytes")

    started = time.perf_counter()
    writer = _PartWriter(store, settings.max_instance_bytes)
    parser = MultipartParser(boundary, writer)
    batch = store.new_batch(expected_study_uid=study_uid)
    queue: asyncio.Queue[tuple[Path | None, FailureReason | None, str] | None] = asyncio.Queue(
        _QUEUE_DEPTH
    )
    outcomes: list[IngestOutcome] = []
    checker = asyncio.create_task(_check_parts(queue, batch, outcomes))
    received = 0
    try:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > settings.max_request_bytes:
                    raise DicomWebError(
                        413, f"request larger than {settings.max_request_bytes} bytes"
                    )
                parser.feed(chunk)
                for item in writer.finished:
                    await queue.put(item)
                writer.finished.clear()
            parser.finish()
        except MultipartError as error:
            raise DicomWebError(400, f"malformed multipart body: {error}") from None
        except ClientDisconnect:
            log.warning("stow.client_disconnected", received_bytes=received)
            raise
    except BaseException:
        writer.abort()
        await queue.put(None)
        await checker  # what was complete is still committed: it is whole and valid
        raise
    await queue.put(None)
    await checker

    for outcome in outcomes:
        if outcome.stored:
            STORED_INSTANCES.inc()
        else:
            STOW_FAILURES.labels(reason=f"0x{outcome.failure:04X}").inc()
    STORED_BYTES.inc(received)
    log.info(
        "stow.done",
        study=study_uid,
        parts=len(outcomes),
        stored=sum(o.stored for o in outcomes),
        failed=sum(not o.stored for o in outcomes),
        bytes=received,
        seconds=round(time.perf_counter() - started, 3),
    )
    return stow_response(outcomes, base_url=dicomweb_root(request), study_uid=study_uid)


async def _check_parts(
    queue: asyncio.Queue[tuple[Path | None, FailureReason | None, str] | None],
    batch: IngestBatch,
    outcomes: list[IngestOutcome],
) -> None:
    """Check and publish finished parts in a worker thread, committing in groups."""
    while True:
        item = await queue.get()
        if item is None:
            break
        path, failure, comment = item
        if path is None:
            outcomes.append(batch.fail(None, failure or FailureReason.CANNOT_UNDERSTAND, comment))
            continue
        outcomes.append(await anyio.to_thread.run_sync(batch.add, path))
        if batch.pending >= _COMMIT_EVERY:
            await anyio.to_thread.run_sync(batch.commit)
    await anyio.to_thread.run_sync(batch.commit)
