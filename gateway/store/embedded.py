"""The embedded store: the files, their catalog, and who wants to hear about new instances."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import structlog

from gateway.store.catalog import Catalog
from gateway.store.check import StoreReport, check, remove_leftovers, try_lock
from gateway.store.files import FileLayout
from gateway.store.ingest import (
    IngestBatch,
    IngestPolicy,
    Observer,
    StoredInstance,
    tell_observers,
)
from gateway.store.part10 import UnreadableInstanceError, read_header

log = structlog.get_logger(__name__)


class EmbeddedStore:
    """``data_dir/store``: Part 10 files plus ``catalog.sqlite``."""

    def __init__(self, root: Path, policy: IngestPolicy):
        self.layout = FileLayout(root)
        self.layout.prepare()
        self.catalog = Catalog.open(root / "catalog.sqlite")
        self.policy = policy
        self.observers: list[Observer] = []
        # Held while the store is open: `fedgate store check --repair` must not remove a file
        # this process has published and is about to commit.
        self._lock = try_lock(root)
        if self._lock is not None:
            self.reclaim()
        else:
            log.warning("store.in_use_no_reclaim", root=str(root))

    def reclaim(self) -> StoreReport:
        """Remove what a crash left: files never acknowledged (:mod:`gateway.store.check`)."""
        started = time.perf_counter()
        report = check(self.layout, self.catalog, whole_studies=False)
        removed = remove_leftovers(self.layout, report)
        if removed:
            log.warning(
                "store.reclaimed",
                orphans=len(report.orphans),
                temporaries=len(report.temporaries),
                seconds=round(time.perf_counter() - started, 3),
            )
        if report.missing:
            log.error(
                "store.files_missing",
                instances=len(report.missing),
                first=report.missing[:5],
                hint="acknowledged instances whose file is gone: fetch them again",
            )
        return report

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer`` with every committed group of newly stored instances."""
        self.observers.append(observer)

    def deliver_unobserved(self, settle_seconds: float = 10.0, group: int = 200) -> int:
        """Hand the observers what was committed but not taken by all of them: an observer
        failed (the index's or the queue's database away), or the process ended between a
        commit and its observers. Returns how many instances were delivered; stops at the
        first group an observer fails on (its instances stay, for the next call).

        Only instances waiting longer than ``settle_seconds`` are taken, so that a group whose
        intake is telling the observers right now is not told twice at once.
        """
        delivered = 0
        while True:
            records = self.catalog.unobserved(time.time() - settle_seconds, group)
            if not records:
                return delivered
            stored: list[StoredInstance] = []
            for record in records:
                try:
                    header = read_header(self.layout.absolute(record.path))
                except (OSError, UnreadableInstanceError) as error:
                    # Its file is gone or damaged (`fedgate store check` reports it): nothing
                    # an observer could read, so it leaves the outbox.
                    log.error(
                        "store.unobserved_unreadable",
                        sop_instance_uid=record.sop_instance_uid,
                        error=str(error),
                    )
                    self.catalog.observers_done([record.sop_instance_uid])
                    continue
                stored.append(StoredInstance(record, header.dataset))
            if not stored:
                continue
            if not tell_observers(self.observers, stored, self.catalog):
                return delivered
            delivered += len(stored)
            log.info("store.unobserved_delivered", instances=len(stored))

    def new_batch(
        self, expected_study_uid: str | None = None, forward_to_pacs: bool | None = None
    ) -> IngestBatch:
        """A batch for one request; ``forward_to_pacs`` overrides the store's policy."""
        policy = self.policy
        if forward_to_pacs is not None and forward_to_pacs != policy.forward_to_pacs:
            policy = replace(policy, forward_to_pacs=forward_to_pacs)
        return IngestBatch(
            layout=self.layout,
            catalog=self.catalog,
            policy=policy,
            observers=self.observers,
            expected_study_uid=expected_study_uid,
        )

    def delete_study(self, study_instance_uid: str) -> bool:
        """Remove a study's files and rows, unless some of it still waits to be forwarded."""
        with self.catalog.transaction() as writer:
            if not writer.delete_study(study_instance_uid):
                return False
        shutil.rmtree(self.layout.instances / study_instance_uid, ignore_errors=True)
        return True

    def path_of(self, relative_path: str) -> Path:
        return self.layout.absolute(relative_path)

    def close(self) -> None:
        self.layout.close()
        self.catalog.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
