"""Turning stable studies into jobs: the stability ledger, the routing rules, the queue.

Runs in every gateway; each evaluates only the series it received itself (its embedded store
holds them), and the shared queue makes a job for (study, series, model) exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio.to_thread
import pydicom
import structlog

from gateway.database_wait import DatabaseDisconnected
from gateway.pipeline.routing import SeriesFacts, route_series
from gateway.pipeline.settings import PipelineSettings, RoutingRule
from gateway.queue import JobQueue, StabilityLedger
from gateway.store import EmbeddedStore

log = structlog.get_logger(__name__)


class StabilityScheduler:
    def __init__(
        self,
        store: EmbeddedStore,
        ledger: StabilityLedger,
        queue: JobQueue,
        rules: list[RoutingRule],
        settings: PipelineSettings,
        gateway_id: str,
        source_url: str,
        on_enqueued: Callable[[], None] | None = None,
        on_stable: Callable[[str, list[str]], None] | None = None,
    ):
        """``on_stable(study, series)`` is called for each study that became stable, after its
        routing, in the scheduler's thread (the gateway prepares the series' WADO-RS
        metadata there: docs/dicomweb.md)."""
        self.store = store
        self.ledger = ledger
        self.queue = queue
        self.rules = rules
        self.settings = settings
        self.gateway_id = gateway_id
        self.source_url = source_url
        self.on_enqueued = on_enqueued
        self.on_stable = on_stable

    async def run(self) -> None:
        interval = min(1.0, self.settings.stable_after_seconds / 4)
        while True:
            try:
                await anyio.to_thread.run_sync(self.evaluate_once)
            except DatabaseDisconnected as error:  # a restart, a failover: the next round
                log.warning("pipeline.scheduler_database_away", reason=str(error))
            except Exception:
                log.exception("pipeline.scheduler_error")
            await asyncio.sleep(interval)

    def evaluate_once(self) -> int:
        """Route the series of every study that became stable; returns jobs created."""
        quiet_since = time.time() - self.settings.stable_after_seconds
        stable = self.ledger.claim_stable(self.gateway_id, quiet_since)
        created_total = 0
        for study_uid, series_uids in stable.items():
            log.info(
                "pipeline.study_stable",
                study=study_uid,
                series=len(series_uids),
                why=self.ledger.declared.pop(study_uid, None)
                or f"no instance for {self.settings.stable_after_seconds:g} s",
            )
            created, reasons = 0, []
            for series_uid in sorted(series_uids):
                facts = stored_series_facts(self.store, series_uid)
                if facts is None:
                    reasons.append(f"series {series_uid}: no longer in the store")
                    continue
                routes, reason = route_series(self.rules, facts)
                if not routes:
                    reasons.append(f"series {series_uid}: {reason}")
                for route in routes:
                    job, what = self.queue.enqueue(
                        study_uid,
                        series_uid,
                        route.model,
                        route.rule,
                        route.inference_url,
                        self.source_url,
                    )
                    log.info(
                        "pipeline.enqueued",
                        study=study_uid,
                        series=series_uid,
                        model=route.model,
                        rule=route.rule,
                        job_id=job.id,
                        outcome=what,
                    )
                    created += what != "already pending"
            summary = "; ".join(reasons) if not created else "routed"
            # A study already analysed keeps its decision when only results (SR, SEG) or
            # other unroutable series arrived since.
            if created:
                self.ledger.record_decision(study_uid, created, summary)
            elif self.queue.search(study_instance_uid=study_uid, limit=1)[1]:
                log.info("pipeline.nothing_new_to_route", study=study_uid, reason=summary)
            else:
                self.ledger.record_decision(study_uid, created, summary)
                log.info("pipeline.not_routed", study=study_uid, reason=summary)
            created_total += created
            if self.on_stable is not None:
                try:
                    self.on_stable(study_uid, sorted(series_uids))
                except Exception:
                    log.exception("pipeline.on_stable_failed", study=study_uid)
        if created_total and self.on_enqueued is not None:
            self.on_enqueued()
        return created_total


def stored_series_facts(store: EmbeddedStore, series_uid: str) -> SeriesFacts | None:
    """What routing knows of a series in the embedded store (its first instance's header and
    its size); None when the series is not there (or its file cannot be read)."""
    rows = store.catalog.query(
        "SELECT path, (SELECT count(*) FROM instances c WHERE c.series_instance_uid = ?) "
        "AS n FROM instances WHERE series_instance_uid = ? "
        "ORDER BY instance_number, sop_instance_uid LIMIT 1",
        [series_uid, series_uid],
    )
    if not rows:
        return None
    try:
        header = pydicom.dcmread(store.path_of(rows[0]["path"]), stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError):
        return None
    return SeriesFacts(series_uid, header, int(rows[0]["n"]))
