"""The analyses a site received, in the job queue's database (SQLite or PostgreSQL).

They live beside the jobs because the queue decides with them: a research job is claimed only
while its analysis is ``running`` (:meth:`gateway.queue.JobQueue.claim`), its results go to
the research store until the site validates the model, and an analysis's progress is counted
from its jobs. Every change of state is recorded with who made it and when.

Transitions (anything else is refused, naming both states)::

    pending -> running | refused
    running -> paused | cancelled | done
    paused  -> running | cancelled

Cancelling drops the analysis's jobs that have not started; running ones finish.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.analysis.records import ANALYSIS_STATES, Analysis, AnalysisState, Progress
from gateway.queue import Database, QueueSettings

__all__ = ["TRANSITIONS", "AnalysisStore"]

TRANSITIONS: dict[AnalysisState, frozenset[AnalysisState]] = {
    "pending": frozenset({"running", "refused"}),
    "running": frozenset({"paused", "cancelled", "done"}),
    "paused": frozenset({"running", "cancelled"}),
    "refused": frozenset(),
    "cancelled": frozenset(),
    "done": frozenset(),
}

_COLUMNS = (
    "a.analysis_id, a.hub, a.bundle_sha256, a.model_name, a.model_version, a.cohort, "
    "a.validated, a.state, a.received_at, a.installed_model, coalesce(v.validated, 0)"
)
_FROM = "analyses a LEFT JOIN validated_models v ON v.model_name = a.installed_model"


def _analysis(row: Sequence[Any]) -> Analysis:
    return Analysis(
        analysis_id=row[0],
        hub=row[1],
        bundle_sha256=row[2],
        model_name=row[3],
        model_version=row[4],
        cohort=json.loads(row[5]),
        # Sent as validated, or the site has since validated the installed model.
        validated=bool(row[6]) or bool(row[10]),
        state=row[7],
        received_at=float(row[8]),
        installed_model=row[9],
    )


class AnalysisStore:
    """The site's analyses. All methods block: call them from a worker thread in async code."""

    def __init__(self, database: Database):
        self.database = database
        self._q = database.dialect.sql

    @classmethod
    def open(cls, queue_settings: QueueSettings, data_dir: Path) -> AnalysisStore:
        """Its own connection to the queue's database (migrated on opening)."""
        return cls(Database.open(queue_settings, data_dir))

    def close(self) -> None:
        self.database.close()

    # -- receiving -------------------------------------------------------------------------

    def receive(self, analysis: Analysis) -> Analysis:
        """Keep a new analysis; the same one sent again returns what is kept (a hub retrying).

        The same id with another bundle is refused (``ValueError``): a changed bundle is a new
        analysis, which needs an approval of its own.
        """
        if analysis.state not in ANALYSIS_STATES:
            raise ValueError(f"unknown analysis state {analysis.state!r}")
        with self.database.transaction() as cursor:
            cursor.execute(
                self._q(
                    "INSERT INTO analyses (analysis_id, hub, bundle_sha256, model_name, "
                    "model_version, cohort, validated, state, received_at, installed_model, "
                    "state_changed_at, state_changed_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (analysis_id) DO NOTHING"
                ),
                (
                    analysis.analysis_id,
                    analysis.hub,
                    analysis.bundle_sha256,
                    analysis.model_name,
                    analysis.model_version,
                    json.dumps(analysis.cohort, sort_keys=True),
                    int(analysis.validated),
                    analysis.state,
                    analysis.received_at,
                    analysis.installed_model,
                    analysis.received_at,
                    f"hub {analysis.hub}",
                ),
            )
            kept = self._get(cursor, analysis.analysis_id)
        assert kept is not None  # inserted or there already, in one transaction
        if kept.bundle_sha256 != analysis.bundle_sha256:
            raise ValueError(
                f"analysis {analysis.analysis_id} was received with bundle "
                f"{kept.bundle_sha256}, not {analysis.bundle_sha256}: a changed bundle is a "
                "new analysis"
            )
        return kept

    # -- reading ---------------------------------------------------------------------------

    def get(self, analysis_id: str) -> Analysis | None:
        with self.database.transaction() as cursor:
            return self._get(cursor, analysis_id)

    def list(self) -> list[Analysis]:
        """Every analysis, oldest first."""
        with self.database.transaction() as cursor:
            cursor.execute(f"SELECT {_COLUMNS} FROM {_FROM} ORDER BY a.received_at, a.analysis_id")
            return [_analysis(row) for row in cursor.fetchall()]

    def history(self, analysis_id: str) -> builtins.list[dict[str, Any]]:
        """Its changes of state: from, to, by whom, when (epoch seconds)."""
        with self.database.transaction() as cursor:
            cursor.execute(
                self._q(
                    "SELECT from_state, to_state, changed_by, changed_at FROM "
                    "analysis_transitions WHERE analysis_id = ? ORDER BY changed_at"
                ),
                (analysis_id,),
            )
            names = ("from", "to", "by", "at")
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def progress(self, analysis_id: str) -> Progress:
        """Counts of its jobs (what the hub may see); ``KeyError`` for an unknown analysis."""
        with self.database.transaction() as cursor:
            analysis = self._get(cursor, analysis_id)
            if analysis is None:
                raise KeyError(analysis_id)
            cursor.execute(
                self._q("SELECT state, count(*) FROM jobs WHERE analysis_id = ? GROUP BY state"),
                (analysis_id,),
            )
            counts = {state: int(count) for state, count in cursor.fetchall()}
        return Progress(
            state=analysis.state,
            selected=sum(counts.values()),
            queued=counts.get("pending", 0),
            running=counts.get("running", 0),
            done=counts.get("succeeded", 0),
            failed=counts.get("failed", 0) + counts.get("dead", 0),
        )

    # -- changing --------------------------------------------------------------------------

    def set_state(self, analysis_id: str, state: AnalysisState, *, by: str) -> Analysis:
        """Move the analysis to ``state`` if the transition is allowed (see the module), and
        record who did it; cancelling drops its jobs that have not started."""
        if state not in ANALYSIS_STATES:
            raise ValueError(f"unknown analysis state {state!r}")
        now = time.time()
        with self.database.transaction() as cursor:
            current = self._get(cursor, analysis_id, lock=True)
            if current is None:
                raise KeyError(analysis_id)
            if state not in TRANSITIONS[current.state]:
                raise ValueError(
                    f"analysis {analysis_id} cannot go from {current.state} to {state}"
                )
            cursor.execute(
                self._q(
                    "UPDATE analyses SET state = ?, state_changed_at = ?, state_changed_by = ? "
                    "WHERE analysis_id = ?"
                ),
                (state, now, by, analysis_id),
            )
            cursor.execute(
                self._q(
                    "INSERT INTO analysis_transitions (analysis_id, from_state, to_state, "
                    "changed_by, changed_at) VALUES (?,?,?,?,?)"
                ),
                (analysis_id, current.state, state, by, now),
            )
            if state == "cancelled":
                self._drop_jobs(cursor, "analysis_id = ? AND state = 'pending'", (analysis_id,))
            changed = self._get(cursor, analysis_id)
        assert changed is not None
        return changed

    def drop_lost_jobs(self) -> int:
        """Drop the jobs of cancelled analyses whose worker died while running them.

        Nothing takes them over (the queue leases no job of a cancelled analysis), so without
        this they would count as running for ever; like the jobs a cancel finds not started,
        they never finished. Returns how many were dropped.
        """
        with self.database.transaction() as cursor:
            return self._drop_jobs(
                cursor,
                "state = 'running' AND lease_expires_at < ? AND analysis_id IN "
                "(SELECT analysis_id FROM analyses WHERE state = 'cancelled')",
                (time.time(),),
            )

    def _drop_jobs(self, cursor: Any, where: str, params: tuple[Any, ...]) -> int:
        cursor.execute(
            self._q(
                f"DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM jobs WHERE {where})"
            ),
            params,
        )
        cursor.execute(self._q(f"DELETE FROM jobs WHERE {where}"), params)
        return max(cursor.rowcount, 0)

    def set_installed_model(self, analysis_id: str, name: str) -> Analysis:
        """Record the name the site's inference service serves the bundle under."""
        with self.database.transaction() as cursor:
            cursor.execute(
                self._q("UPDATE analyses SET installed_model = ? WHERE analysis_id = ?"),
                (name, analysis_id),
            )
            if not cursor.rowcount:
                raise KeyError(analysis_id)
            changed = self._get(cursor, analysis_id)
        assert changed is not None
        return changed

    def set_validated(self, model_name: str, validated: bool) -> None:
        """Mark an installed model validated (or no longer): from its next job on, its results
        go to the clinical destination (or back to the research store).

        ``model_name`` is the name the inference service serves it under (the analysis's
        ``installed_model``); ``KeyError`` when no analysis installed such a model.
        """
        with self.database.transaction() as cursor:
            cursor.execute(
                self._q("SELECT count(*) FROM analyses WHERE installed_model = ?"),
                (model_name,),
            )
            if not int(cursor.fetchone()[0]):
                raise KeyError(model_name)
            cursor.execute(
                self._q(
                    "INSERT INTO validated_models (model_name, validated, changed_at) "
                    "VALUES (?,?,?) ON CONFLICT (model_name) DO UPDATE SET "
                    "validated = excluded.validated, changed_at = excluded.changed_at"
                ),
                (model_name, int(validated), time.time()),
            )

    # -- inside a transaction --------------------------------------------------------------

    def _get(self, cursor: Any, analysis_id: str, lock: bool = False) -> Analysis | None:
        # FOR UPDATE of the analysis row only (PostgreSQL refuses it on a LEFT JOIN's
        # nullable side).
        suffix = " FOR UPDATE OF a" if lock and self.database.dialect.name == "postgresql" else ""
        cursor.execute(
            self._q(f"SELECT {_COLUMNS} FROM {_FROM} WHERE a.analysis_id = ?{suffix}"),
            (analysis_id,),
        )
        row = cursor.fetchone()
        return _analysis(row) if row else None
