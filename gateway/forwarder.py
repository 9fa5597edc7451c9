"""Forwarding accepted instances to the upstream PACS (``ingest.forward_to_pacs``).

For sites whose modalities send to the gateway first. The outbox lives in the catalog and is
written in the same transaction as the instance, so forwarding survives any crash. Each
instance is retried with backoff until the PACS confirms it in ReferencedSOPSequence; one that
the PACS refuses for good (a failure reason, not a transient error) is retried a bounded number
of times and then marked ``failed`` with the reason: never an endless loop, never a stall of
the instances behind it (MONAI Deploy's lessons, DESIGN.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

import anyio.to_thread
import structlog

from gateway.metrics import FORWARDED_INSTANCES
from gateway.pacs import PacsClient, UpstreamError
from gateway.store import EmbeddedStore, InstanceRecord

log = structlog.get_logger(__name__)

BATCH_SIZE = 50
MAX_REFUSALS = 5


def _delay(attempts: int) -> float:
    return min(60.0, 2.0**attempts)


class Forwarder:
    def __init__(self, store: EmbeddedStore, pacs: PacsClient):
        self.store = store
        self.pacs = pacs
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """Wake the forwarder (callable from any thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                forwarded = await self.forward_once()
            except Exception:
                log.exception("forward.loop_error")
                forwarded = 0
            if not forwarded:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    async def forward_once(self) -> int:
        """Forward one batch of due instances; returns how many were confirmed."""
        due = await anyio.to_thread.run_sync(self.store.catalog.due_forwards, BATCH_SIZE)
        if not due:
            return 0
        by_study: dict[str, list[tuple[InstanceRecord, int]]] = defaultdict(list)
        for record, attempts in due:
            by_study[record.study_instance_uid].append((record, attempts))
        confirmed = 0
        for study_uid, items in by_study.items():
            confirmed += await self._forward_study(study_uid, items)
        return confirmed

    async def _forward_study(self, study_uid: str, items: list[tuple[InstanceRecord, int]]) -> int:
        files = [self.store.path_of(record.path) for record, _ in items]
        try:
            result = await self.pacs.store(files, study_uid=study_uid)
        except UpstreamError as error:
            log.warning("forward.upstream_error", study=study_uid, error=str(error))
            await self._record_failures(items, str(error), refused=False)
            return 0
        stored = [r.sop_instance_uid for r, _ in items if r.sop_instance_uid in result.stored]
        missing = [(r, a) for r, a in items if r.sop_instance_uid not in result.stored]

        def confirm() -> None:
            with self.store.catalog.transaction() as writer:
                writer.forward_succeeded(stored)

        await anyio.to_thread.run_sync(confirm)
        FORWARDED_INSTANCES.inc(len(stored))
        if missing:
            reasons = {result.failed.get(r.sop_instance_uid) for r, _ in missing}
            log.warning(
                "forward.not_confirmed",
                study=study_uid,
                count=len(missing),
                failure_reasons=sorted(f"0x{x:04X}" for x in reasons if x),
            )
            await self._record_failures(
                missing, f"PACS answered {result.status_code} without storing it", refused=True
            )
        return len(stored)

    async def _record_failures(
        self, items: list[tuple[InstanceRecord, int]], error: str, refused: bool
    ) -> None:
        def write() -> None:
            with self.store.catalog.transaction() as writer:
                for record, attempts in items:
                    give_up = refused and attempts + 1 >= MAX_REFUSALS
                    writer.forward_failed(
                        record.sop_instance_uid, error, time.time() + _delay(attempts), give_up
                    )
                    if give_up:
                        log.error(
                            "forward.gave_up", sop_instance_uid=record.sop_instance_uid, error=error
                        )

        await anyio.to_thread.run_sync(write)
