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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
_QUEUE_DEPTH = 16
# Threads checking parts at once: fsync releases the GIL, so their disk waits overlap.
_CHECKERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stow-check")
# Commit (fsync directories, one catalog transaction, observers) at least this often, so
# memory for pending headers stays bounded in a very large request.
_COMMIT_EVERY = 64


@dataclass
class FinishedPart:
    """A part received whole: its temporary file (still open), or why it already failed."""

    path: Path | None
    handle: BinaryIO | None
    failure: FailureReason | None = None
    comment: str = ""


class _PartWriter:
    """Parser callbacks: write each part's body to its own temporary file."""

    def __init__(self, store: EmbeddedStore, max_instance_bytes: int):
        self.store = store
        self.max_instance_bytes = max_instance_bytes
        self.finished: list[FinishedPart] = []
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

    def part_data(self, data: memoryview) -> None:
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
            # Left open: the checker fsyncs through it and closes it.
            self.finished.append(FinishedPart(self._path, self._handle))
            self._handle = None
        else:
            reason, comment = self._failure or (FailureReason.CANNOT_UNDERSTAND, "empty part")
            self.finished.append(FinishedPart(None, None, reason, comment))
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
        for part in self.finished:
            discard_part(part)
        self.finished.clear()


def discard_part(part: FinishedPart) -> None:
    if part.handle is not None:
        part.handle.close()
    if part.path is not None:
        part.path.unlink(missing_ok=True)


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
    return await _store(request, forward_to_pacs=None)


async def store_results(request: Request) -> Response:
    """STOW-RS of analysis results (SR, SEG): stored, and forwarded to the PACS if there is one.

    The inference service writes here, so results reach the radiologists' PACS through the
    gateway's durable outbox even when the PACS is briefly down.
    """
    has_pacs = request.app.state.pacs is not None
    return await _store(request, forward_to_pacs=has_pacs)


async def _store(request: Request, forward_to_pacs: bool | None) -> Response:
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
    try:
        parser = MultipartParser(boundary, writer)
    except MultipartError as error:
        raise DicomWebError(400, f"malformed multipart body: {error}") from None
    batch = store.new_batch(expected_study_uid=study_uid, forward_to_pacs=forward_to_pacs)
    queue: asyncio.Queue[FinishedPart | None] = asyncio.Queue(_QUEUE_DEPTH)
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
    queue: asyncio.Queue[FinishedPart | None],
    batch: IngestBatch,
    outcomes: list[IngestOutcome],
) -> None:
    """Check and publish finished parts in a worker thread, committing in groups.

    Whatever has queued up is handled in one hop to the thread, so under load there is one
    hop per group of parts rather than per part.
    """
    finished = False
    while not finished:
        parts = [await queue.get()]
        while not queue.empty():
            parts.append(queue.get_nowait())
        if parts[-1] is None:
            finished = True
            parts.pop()
        if parts:
            outcomes.extend(await anyio.to_thread.run_sync(_check_group, batch, parts))
    await anyio.to_thread.run_sync(batch.commit)


def _check_group(batch: IngestBatch, parts: list[FinishedPart | None]) -> list[IngestOutcome]:
    """Check a group of parts, several at a time: one part's fsync overlaps another's parse."""

    def check(part: FinishedPart | None) -> IngestOutcome:
        assert part is not None
        if part.path is None:
            return batch.fail(None, part.failure or FailureReason.CANNOT_UNDERSTAND, part.comment)
        return batch.add(part.path, part.handle)

    results = list(_CHECKERS.map(check, parts))
    if batch.pending >= _COMMIT_EVERY:
        batch.commit()
    return results
