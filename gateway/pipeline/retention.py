"""Retention of the embedded store when an upstream PACS holds the data.

The embedded store then only stages instances for analysis: a study is removed
``pipeline.retention_seconds`` after the last job on it ended, once nothing of it is still
waiting to be forwarded. Without an upstream PACS the embedded store is the archive and
nothing is removed (the gateway does not even start this task).
"""

from __future__ import annotations

import asyncio
import time

import anyio.to_thread
import structlog

from gateway.queue import JobQueue
from gateway.store import EmbeddedStore

log = structlog.get_logger(__name__)


class Retention:
    def __init__(self, store: EmbeddedStore, queue: JobQueue, retention_seconds: float):
        self.store = store
        self.queue = queue
        self.retention_seconds = retention_seconds

    async def run(self) -> None:
        interval = max(1.0, min(60.0, self.retention_seconds / 2))
        while True:
            try:
                await anyio.to_thread.run_sync(self.sweep)
            except Exception:
                log.exception("retention.error")
            await asyncio.sleep(interval)

    def sweep(self) -> int:
        """Remove every study whose retention has passed; returns how many."""
        removed = 0
        cutoff = time.time() - self.retention_seconds
        for row in self.store.catalog.query("SELECT study_instance_uid FROM studies", []):
            study_uid = row["study_instance_uid"]
            finished = self.queue.study_jobs_finished(study_uid)
            if finished is None or finished > cutoff:
                continue
            if self.store.delete_study(study_uid):
                removed += 1
                log.info("retention.removed", study=study_uid)
        return removed
