"""Retention of the embedded store when an upstream PACS holds the data.

The embedded store then only stages instances for analysis: a study is removed
``pipeline.retention_seconds`` after the last job on it ended, once nothing of it is still
waiting to be forwarded — and only when the PACS holds every instance of it (checked by
QIDO-RS): an instance sent straight to the gateway and never forwarded is kept, whatever the
setting, since it exists nowhere else. Without an upstream PACS the embedded store is the
archive and nothing is removed (the gateway does not even start this task).
"""

from __future__ import annotations

import asyncio
import time

import anyio.to_thread
import structlog

from gateway.pacs import PacsClient, UpstreamError
from gateway.queue import JobQueue
from gateway.store import EmbeddedStore

log = structlog.get_logger(__name__)


class Retention:
    def __init__(
        self, store: EmbeddedStore, queue: JobQueue, pacs: PacsClient, retention_seconds: float
    ):
        self.store = store
        self.queue = queue
        self.pacs = pacs
        self.retention_seconds = retention_seconds
        self._kept: set[str] = set()

    async def run(self) -> None:
        interval = max(1.0, min(60.0, self.retention_seconds / 2))
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention.error")
            await asyncio.sleep(interval)

    async def sweep(self) -> int:
        """Remove every study whose retention has passed and that the PACS holds."""
        removed = 0
        cutoff = time.time() - self.retention_seconds
        rows = await anyio.to_thread.run_sync(
            self.store.catalog.query, "SELECT study_instance_uid FROM studies", []
        )
        for row in rows:
            study_uid = row["study_instance_uid"]
            finished = await anyio.to_thread.run_sync(self.queue.study_jobs_finished, study_uid)
            if finished is None or finished > cutoff:
                continue
            if not await self._pacs_holds(study_uid):
                continue
            if await anyio.to_thread.run_sync(self.store.delete_study, study_uid):
                removed += 1
                log.info("retention.removed", study=study_uid)
        return removed

    async def _pacs_holds(self, study_uid: str) -> bool:
        local = {
            row["sop_instance_uid"]
            for row in await anyio.to_thread.run_sync(
                self.store.catalog.query,
                "SELECT sop_instance_uid FROM instances WHERE study_instance_uid = ?",
                [study_uid],
            )
        }
        try:
            remote = {
                str(result.get("00080018", {}).get("Value", [""])[0])
                for result in await self.pacs.search(
                    f"studies/{study_uid}/instances", [("includefield", "00080018")]
                )
            }
        except UpstreamError as error:
            log.warning("retention.pacs_unavailable", study=study_uid, error=str(error))
            return False
        missing = local - remote
        if missing and study_uid not in self._kept:
            self._kept.add(study_uid)
            log.warning("retention.kept_not_in_pacs", study=study_uid, instances=len(missing))
        return not missing
