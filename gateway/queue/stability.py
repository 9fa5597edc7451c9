"""Study stability: when each series last received an instance, and which are still to route.

A study is stable when none of its series has received an instance for
``pipeline.stable_after_seconds``. Series that received instances since they were last routed
are routed again (instances arriving after a study was stable reopen it). Rows are owned by
the gateway that received the instances (``gateway_id``): its embedded store holds them.

A sender that has waited for stability itself (a PACS forwarding on its own stable event)
says so (:meth:`StabilityLedger.declare_stable`): its series count as quiet at once, so the
study is not waited for a second time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.queue.database import Database


class StabilityLedger:
    """All methods block: call them from a worker thread in async code."""

    def __init__(self, database: Database):
        self.database = database
        self._transaction = database.transaction
        self._q = database.dialect.sql
        self.dialect = database.dialect
        #: Study -> who declared it stable, for the log line of the routing decision (kept in
        #: memory: after a restart the study is logged as quiet, which it then is).
        self.declared: dict[str, str] = {}

    def declare_stable(
        self, series: Sequence[tuple[str, str]], quiet_for: float, declared_by: str
    ) -> None:
        """The sender of these (study, series) pairs waited for the study to be stable: date
        their last arrival ``quiet_for`` seconds back (and make them due for routing), so the
        next evaluation finds the study stable unless another series of it is still busy."""
        at = time.time() - quiet_for
        with self._transaction() as cursor:
            cursor.executemany(
                self._q(
                    "UPDATE series_activity SET last_instance_at = ?, evaluated_at = NULL "
                    "WHERE series_instance_uid = ?"
                ),
                [(at, series_uid) for _, series_uid in series],
            )
        for study_uid, _ in series:
            self.declared[study_uid] = declared_by

    def touch_series(self, series: Sequence[tuple[str, str]], gateway_id: str, at: float) -> None:
        """Record that (study, series) pairs received instances at ``at``."""
        with self._transaction() as cursor:
            cursor.executemany(
                self._q(
                    "INSERT INTO series_activity (series_instance_uid, study_instance_uid, "
                    "gateway_id, last_instance_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (series_instance_uid) DO UPDATE SET "
                    "last_instance_at = excluded.last_instance_at, gateway_id = excluded.gateway_id"
                ),
                [(series_uid, study_uid, gateway_id, at) for study_uid, series_uid in series],
            )

    def claim_stable(self, gateway_id: str, quiet_since: float) -> dict[str, list[str]]:
        """Studies of this gateway silent since ``quiet_since``: their series with instances
        not yet routed. Marks them routed, so each arrival is evaluated once."""
        now = time.time()
        with self._transaction() as cursor:
            cursor.execute(
                self._q(
                    "SELECT a.study_instance_uid, a.series_instance_uid FROM series_activity a "
                    "WHERE a.gateway_id = ? AND (a.evaluated_at IS NULL "
                    "OR a.evaluated_at < a.last_instance_at) AND NOT EXISTS (SELECT 1 FROM "
                    "series_activity b WHERE b.study_instance_uid = a.study_instance_uid "
                    "AND b.last_instance_at > ?)" + self.dialect.claim_suffix
                ),
                (gateway_id, quiet_since),
            )
            stable: dict[str, list[str]] = {}
            for study_uid, series_uid in cursor.fetchall():
                stable.setdefault(study_uid, []).append(series_uid)
            for series_uids in stable.values():
                cursor.executemany(
                    self._q(
                        "UPDATE series_activity SET evaluated_at = ? WHERE series_instance_uid = ?"
                    ),
                    [(now, uid) for uid in series_uids],
                )
            return stable

    def record_decision(self, study_instance_uid: str, jobs_created: int, reason: str) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                self._q(
                    "INSERT INTO routing_decisions VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (study_instance_uid) DO UPDATE SET "
                    "decided_at = excluded.decided_at, jobs_created = excluded.jobs_created, "
                    "reason = excluded.reason"
                ),
                (study_instance_uid, time.time(), jobs_created, reason),
            )

    def decision(self, study_instance_uid: str) -> tuple[int, str] | None:
        with self._transaction() as cursor:
            cursor.execute(
                self._q(
                    "SELECT jobs_created, reason FROM routing_decisions "
                    "WHERE study_instance_uid = ?"
                ),
                (study_instance_uid,),
            )
            row = cursor.fetchone()
            return (int(row[0]), str(row[1])) if row else None
