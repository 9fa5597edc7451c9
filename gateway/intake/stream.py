"""Receiving a multipart/related stream of Part 10 instances into the embedded store.

Used by STOW-RS (the request body) and by polling of the upstream PACS (a WADO-RS response).
The body is parsed while it arrives; each part is written to a temporary file as its bytes
come in, then checked and published by worker threads while the next part is received, so
reception and disk work overlap and memory stays bounded by the chunk size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

from gateway.dicomweb.multipart import MediaType, MultipartParser
from gateway.store import EmbeddedStore, FailureReason, IngestBatch, IngestOutcome
from gateway.store.part10 import HEAD_BYTES, ParsedInstance, header_from_head


class RequestTooLarge(Exception):
    """The stream exceeded its size limit (STOW-RS answers 413)."""


@dataclass
class IngestResult:
    outcomes: list[IngestOutcome]
    received_bytes: int


async def ingest_multipart(
    store: EmbeddedStore,
    chunks: AsyncIterator[bytes],
    boundary: str,
    *,
    max_instance_bytes: int,
    max_request_bytes: int,
    expected_study_uid: str | None = None,
    forward_to_pacs: bool | None = None,
) -> IngestResult:
    """Store every part of the stream; raises MultipartError or RequestTooLarge.

    Whatever the outcome, parts that arrived whole are checked and committed (they are
    complete, valid instances); a part cut off mid-way never becomes visible.
    """
    writer = _PartWriter(store, max_instance_bytes)
    parser = MultipartParser(boundary, writer)
    batch = store.new_batch(expected_study_uid=expected_study_uid, forward_to_pacs=forward_to_pacs)
    checks = _Checks(batch)
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_request_bytes:
                raise RequestTooLarge(f"request larger than {max_request_bytes} bytes")
            parser.feed(chunk)
            for part in writer.finished:
                await checks.submit(part)
            writer.finished.clear()
        parser.finish()
    except BaseException:
        writer.abort()
        await checks.finish()  # what was complete is still committed: it is whole and valid
        raise
    return IngestResult(await checks.finish(), received)


class _Checks:
    """Parts being checked: each goes to the checker pool as soon as it is whole, so the
    pool stays busy while reception goes on; every ``_COMMIT_EVERY`` parts, and at the end,
    the checks so far are awaited and committed together (a commit needs no check running)."""

    def __init__(self, batch: IngestBatch):
        self.batch = batch
        self.futures: list[asyncio.Future[IngestOutcome]] = []
        self.committed = 0

    async def submit(self, part: FinishedPart) -> None:
        loop = asyncio.get_running_loop()
        position = len(self.futures)
        self.futures.append(loop.run_in_executor(_CHECKERS, _check, self.batch, part, position))
        running = [f for f in self.futures[self.committed :] if not f.done()]
        if len(running) >= _QUEUE_DEPTH:
            # The disk is behind: reception waits for it.
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        if len(self.futures) - self.committed >= _COMMIT_EVERY:
            await self._commit()

    async def _commit(self) -> None:
        await asyncio.gather(*self.futures[self.committed :], return_exceptions=True)
        self.committed = len(self.futures)
        await anyio.to_thread.run_sync(self.batch.commit)

    async def finish(self) -> list[IngestOutcome]:
        await self._commit()
        return [future.result() for future in self.futures]


def _check(batch: IngestBatch, part: FinishedPart, position: int) -> IngestOutcome:
    if part.path is None:
        return batch.fail(None, part.failure or FailureReason.CANNOT_UNDERSTAND, part.comment)
    return batch.add(part.path, part.handle, part.head, part.parsed, position=position)


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
    #: The part's first bytes, kept so that its header is parsed from memory, not re-read.
    head: bytes | None = None
    #: Its header, when the head alone settled it (the common case), parsed on receipt.
    parsed: ParsedInstance | None = None


class _PartWriter:
    """Parser callbacks: write each part's body to its own temporary file."""

    def __init__(self, store: EmbeddedStore, max_instance_bytes: int):
        self.store = store
        self.max_instance_bytes = max_instance_bytes
        self.finished: list[FinishedPart] = []
        self._path: Path | None = None
        self._handle: BinaryIO | None = None
        self._size = 0
        self._head = bytearray()
        self._failure: tuple[FailureReason, str] | None = None

    def part_begin(self, headers: dict[str, str]) -> None:
        self._size = 0
        self._head = bytearray()
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
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self._handle.write(data)

    def part_end(self) -> None:
        if self._handle is not None:
            head = bytes(self._head)
            # Parsed here, in the thread that receives: the checker threads are left with the
            # fsync and the rename, which wait on the disk and not on the interpreter lock,
            # so reception does not queue behind them for it (about 5% of a request's time).
            parsed = header_from_head(head, self._size) if self._size else None
            # Left open: the checker fsyncs through it and closes it.
            self.finished.append(FinishedPart(self._path, self._handle, head=head, parsed=parsed))
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
