"""The durable job queue: one job per (study, series, model), shared by gateway replicas.

States: ``pending`` -> ``running`` (leased to one worker until ``lease_expires_at``) ->
``succeeded`` | ``failed`` (a permanent error: bad input) | ``dead`` (transient errors until
``max_attempts``). A worker that crashes stops renewing its lease; once the lease expires any
worker may take the job over. Every job reaches a terminal state (MONAI Deploy's lesson:
no endless retry loops without a failure status).

Enqueueing is idempotent: a job already pending stays as it is (a study forwarded twice does
not run twice); a running job is marked to run once more when it ends (new instances
arrived during the run); a finished job goes back to pending (a re-run, whose SR replaces
the previous one thanks to deterministic UIDs).

SQLite (WAL, ``BEGIN IMMEDIATE``) in ``data_dir`` by default; PostgreSQL with
``FOR UPDATE SKIP LOCKED`` when several replicas share one queue.
"""

from __future__ import annotations

import enum
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.queue.database import Database


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"


TERMINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD)

_COLUMNS = (
    "id, study_instance_uid, series_instance_uid, model, rule, inference_url, source_url, "
    "state, attempts, max_attempts, rerun_requested, lease_owner, lease_expires_at, "
    "next_attempt_at, created_at, enqueued_at, started_at, finished_at, last_error, "
    "error_kind, sr_sop_instance_uid, seg_sop_instance_uid, findings_count, result, lane, "
    "analysis_id"
)

#: A new job, or nothing when (study, series, model) has one: two replicas enqueueing at once
#: cannot both create it.
_INSERT = (
    "INSERT INTO jobs (study_instance_uid, series_instance_uid, model, rule, inference_url, "
    "source_url, state, max_attempts, next_attempt_at, created_at, enqueued_at, lane, "
    "analysis_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (study_instance_uid, series_instance_uid, model) DO NOTHING"
)

#: Studies from the PACS: always claimed before any research job.
CLINICAL = "clinical"
#: A federated analysis's backfill: throttled, and paused or cancelled with its analysis.
RESEARCH = "research"
LANES = (CLINICAL, RESEARCH)

#: The key of the lock that makes claiming one replica at a time on PostgreSQL, so that the
#: research throttle and the per-model limits hold across replicas (two replicas counting at
#: once would each see a free slot).
_CLAIM_LOCK_KEY = 727101


@dataclass
class Job:
    id: int
    study_instance_uid: str
    series_instance_uid: str
    model: str
    rule: str
    inference_url: str
    source_url: str
    state: JobState
    attempts: int
    max_attempts: int
    rerun_requested: bool
    lease_owner: str | None
    lease_expires_at: float | None
    next_attempt_at: float
    created_at: float
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    last_error: str | None
    error_kind: str | None
    sr_sop_instance_uid: str | None
    seg_sop_instance_uid: str | None
    findings_count: int | None
    result: dict[str, Any] | None
    lane: str
    analysis_id: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Set when claimed: a research job of an analysis whose model the site has not validated,
    #: whose results go to the research store instead of the clinical destination.
    results_to_research: bool = False

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Job:
        values = list(row)
        values[7] = JobState(values[7])
        values[10] = bool(values[10])
        values[23] = json.loads(values[23]) if values[23] else None
        return cls(*values)

    def as_json(self, detail: bool = False) -> dict[str, Any]:
        """The job as the job API shows it; ``detail`` adds its findings and attempts."""
        shown: dict[str, Any] = {
            "id": self.id,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "model": self.model,
            "rule": self.rule,
            "state": self.state.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "rerun_requested": self.rerun_requested,
            "lease_owner": self.lease_owner,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "enqueued_at": self.enqueued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "last_error": self.last_error,
            "error_kind": self.error_kind,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "seg_sop_instance_uid": self.seg_sop_instance_uid,
            "findings_count": self.findings_count,
            "timings": (self.result or {}).get("timings"),
            "lane": self.lane,
            "analysis_id": self.analysis_id,
        }
        if detail:
            shown["findings"] = (self.result or {}).get("findings", [])
            shown["history"] = self.history
        return shown


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter (0.5x to 1.5x), so retries of many jobs spread out."""
    return min(cap, base * 2 ** max(attempts - 1, 0)) * random.uniform(0.5, 1.5)


class JobQueue:
    """The jobs. All methods block: call them from a worker thread in async code."""

    def __init__(self, database: Database):
        self.database = database
        self.settings = database.settings
        self.dialect = database.dialect
        self._transaction = database.transaction
        self._q = database.dialect.sql

    # -- enqueueing ----------------------------------------------------------------------

    def enqueue(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        model: str,
        rule: str,
        inference_url: str,
        source_url: str,
        *,
        lane: str = CLINICAL,
        analysis_id: str | None = None,
    ) -> tuple[Job, str]:
        """Ask for (study, series, model) to be analysed. Returns the job and what happened:
        ``created``, ``already pending``, ``rerun after the running attempt`` or ``requeued``.

        A research job (``lane="research"``, with its ``analysis_id``) is created once and
        never requeued: selecting an analysis's series again (a restarted gateway, a site back
        from an outage) leaves the series already run as they are (``already selected``).
        """
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}, not {lane!r}")
        if (lane == RESEARCH) != (analysis_id is not None):
            raise ValueError("a research job needs its analysis_id, a clinical job has none")
        now = time.time()
        with self._transaction() as cursor:
            # Insert-or-nothing first: two replicas enqueueing at once cannot both create it.
            cursor.execute(
                self._q(f"{_INSERT} RETURNING {_COLUMNS}"),
                (
                    study_instance_uid,
                    series_instance_uid,
                    model,
                    rule,
                    inference_url,
                    source_url,
                    JobState.PENDING.value,
                    self.settings.max_attempts,
                    now,
                    now,
                    now,
                    lane,
                    analysis_id,
                ),
            )
            created = cursor.fetchone()
            if created is not None:
                return Job.from_row(created), "created"
            cursor.execute(
                self._q(
                    f"SELECT {_COLUMNS} FROM jobs WHERE study_instance_uid = ? "
                    "AND series_instance_uid = ? AND model = ?" + self.dialect.lock_suffix
                ),
                (study_instance_uid, series_instance_uid, model),
            )
            job = Job.from_row(cursor.fetchone())
            if lane == RESEARCH:
                return job, "already selected"
            if job.state is JobState.PENDING:
                return job, "already pending"
            if job.state is JobState.RUNNING:
                cursor.execute(
                    self._q("UPDATE jobs SET rerun_requested = 1 WHERE id = ?"), (job.id,)
                )
                job.rerun_requested = True
                return job, "rerun after the running attempt"
            cursor.execute(
                self._q(
                    "UPDATE jobs SET state = ?, attempts = 0, rerun_requested = 0, "
                    "next_attempt_at = ?, enqueued_at = ?, inference_url = ?, source_url = ?, "
                    "rule = ?, last_error = NULL, error_kind = NULL, lease_owner = NULL, "
                    f"lease_expires_at = NULL WHERE id = ? RETURNING {_COLUMNS}"
                ),
                (JobState.PENDING.value, now, now, inference_url, source_url, rule, job.id),
            )
            return Job.from_row(cursor.fetchone()), "requeued"

    def enqueue_research(
        self, analysis_id: str, jobs: Sequence[tuple[str, str, str, str, str, str]]
    ) -> int:
        """Research jobs of an analysis, (study, series, model, rule, inference_url,
        source_url) each, in one transaction; returns how many are new. As with
        :meth:`enqueue`, a job already there (selected before a restart) is left as it is."""
        now = time.time()
        created = 0
        with self._transaction() as cursor:
            for study_uid, series_uid, model, rule, inference_url, source_url in jobs:
                cursor.execute(
                    self._q(_INSERT),
                    (
                        study_uid,
                        series_uid,
                        model,
                        rule,
                        inference_url,
                        source_url,
                        JobState.PENDING.value,
                        self.settings.max_attempts,
                        now,
                        now,
                        now,
                        RESEARCH,
                        analysis_id,
                    ),
                )
                created += max(cursor.rowcount, 0)
        return created

    # -- workers -------------------------------------------------------------------------

    def claim(
        self,
        worker: str,
        limit: int,
        concurrency: dict[str, int],
        default: int,
        research_max_running: int = 1,
        research_waits_for_clinical: bool = True,
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs, honouring each model's concurrency limit.

        Due: pending and past ``next_attempt_at``, or running with an expired lease (its
        worker died). Taking over an expired lease counts as a new attempt.

        Lanes: every due clinical job is taken before any research job, so a backfill never
        delays a study from the PACS. With ``research_waits_for_clinical`` no research job
        starts while a clinical job runs or is due (it would share the inference service's
        cores with it). At most ``research_max_running`` research jobs run at once, all
        replicas together, and none of an analysis that is not ``running`` (paused,
        cancelled).
        """
        now = time.time()
        lease_until = now + self.settings.lease_seconds
        with self._transaction() as cursor:
            if self.dialect.name == "postgresql":
                # Released at commit: replicas count running jobs one after the other.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK_KEY,))
            cursor.execute(
                self._q(
                    "SELECT model, lane, count(*) FROM jobs WHERE state = 'running' "
                    "AND lease_expires_at >= ? GROUP BY model, lane"
                ),
                (now,),
            )
            running: dict[str, int] = {}
            research_running = 0
            clinical_busy = False
            for model, lane, count in cursor.fetchall():
                running[model] = running.get(model, 0) + int(count)
                if lane == RESEARCH:
                    research_running += int(count)
                else:
                    clinical_busy = research_waits_for_clinical
            cursor.execute(
                self._q(
                    f"SELECT {_COLUMNS} FROM jobs "
                    "WHERE ((state = 'pending' AND next_attempt_at <= ?) "
                    "OR (state = 'running' AND lease_expires_at < ?)) "
                    "AND (lane = 'clinical' OR analysis_id IN "
                    "(SELECT analysis_id FROM analyses WHERE state = 'running')) "
                    "ORDER BY CASE WHEN lane = 'clinical' THEN 0 ELSE 1 END, next_attempt_at, id"
                    " LIMIT ?" + self.dialect.claim_suffix
                ),
                (now, now, limit * 4),
            )
            claimed: list[Job] = []
            for row in cursor.fetchall():
                job = Job.from_row(row)
                if len(claimed) >= limit:
                    break
                if job.lane == RESEARCH and (
                    clinical_busy or research_running >= research_max_running
                ):
                    # Clinical rows come first: any due one, claimed or not, was seen.
                    break
                clinical_busy |= job.lane != RESEARCH and research_waits_for_clinical
                if running.get(job.model, 0) >= concurrency.get(job.model, default):
                    continue
                running[job.model] = running.get(job.model, 0) + 1
                research_running += job.lane == RESEARCH
                if job.state is JobState.RUNNING:  # taken over from a dead worker
                    cursor.execute(
                        self._q(
                            "UPDATE job_attempts SET finished_at = ?, outcome = 'lease expired' "
                            "WHERE job_id = ? AND finished_at IS NULL"
                        ),
                        (now, job.id),
                    )
                if job.attempts >= job.max_attempts:
                    cursor.execute(
                        self._q(
                            "UPDATE jobs SET state = 'dead', finished_at = ?, lease_owner = NULL,"
                            " last_error = ?, error_kind = 'transient' WHERE id = ?"
                        ),
                        (now, job.last_error or "attempts exhausted (worker lost)", job.id),
                    )
                    continue
                cursor.execute(
                    self._q(
                        "UPDATE jobs SET state = 'running', attempts = attempts + 1, "
                        "lease_owner = ?, lease_expires_at = ?, started_at = ?, finished_at = NULL"
                        f" WHERE id = ? RETURNING {_COLUMNS}"
                    ),
                    (worker, lease_until, now, job.id),
                )
                leased = Job.from_row(cursor.fetchone())
                if leased.lane == RESEARCH:
                    leased.results_to_research = not self._validated(cursor, leased.analysis_id)
                cursor.execute(
                    self._q(
                        # Numbered over the job's whole life: a re-run continues the count.
                        "INSERT INTO job_attempts (job_id, attempt, worker, started_at) "
                        "SELECT ?, coalesce(max(attempt), 0) + 1, ?, ? FROM job_attempts "
                        "WHERE job_id = ?"
                    ),
                    (leased.id, worker, now, leased.id),
                )
                claimed.append(leased)
            return claimed

    def heartbeat(self, job_id: int, worker: str) -> bool:
        """Extend the lease; False when the job is no longer this worker's."""
        with self._transaction() as cursor:
            cursor.execute(
                self._q(
                    "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? "
                    "AND state = 'running'"
                ),
                (time.time() + self.settings.lease_seconds, job_id, worker),
            )
            return bool(cursor.rowcount)

    def succeed(self, job_id: int, worker: str, result: dict[str, Any]) -> JobState | None:
        """Record the result; the job ends, or runs once more if new instances came meanwhile."""
        now = time.time()
        with self._transaction() as cursor:
            job = self._owned(cursor, job_id, worker)
            if job is None:
                return None
            state = JobState.PENDING if job.rerun_requested else JobState.SUCCEEDED
            cursor.execute(
                self._q(
                    "UPDATE jobs SET state = ?, rerun_requested = 0, lease_owner = NULL, "
                    "lease_expires_at = NULL, finished_at = ?, next_attempt_at = ?, "
                    "attempts = CASE WHEN ? = 1 THEN 0 ELSE attempts END, "
                    "last_error = NULL, error_kind = NULL, sr_sop_instance_uid = ?, "
                    "seg_sop_instance_uid = ?, findings_count = ?, result = ? WHERE id = ?"
                ),
                (
                    state.value,
                    now,
                    now,
                    1 if state is JobState.PENDING else 0,
                    result.get("sr_sop_instance_uid"),
                    result.get("seg_sop_instance_uid"),
                    len(result.get("findings", [])),
                    json.dumps(result),
                    job_id,
                ),
            )
            self._finish_attempt(cursor, job, now, "succeeded", None)
            return state

    def fail(
        self, job_id: int, worker: str, error: str, permanent: bool, retry_after: float | None
    ) -> JobState | None:
        """A permanent error fails the job; a transient one retries with backoff until dead."""
        now = time.time()
        with self._transaction() as cursor:
            job = self._owned(cursor, job_id, worker)
            if job is None:
                return None
            if permanent:
                state = JobState.FAILED
            elif job.attempts >= job.max_attempts:
                state = JobState.DEAD
            else:
                state = JobState.PENDING
            delay = max(
                retry_after or 0.0,
                backoff_seconds(
                    job.attempts, self.settings.backoff_seconds, self.settings.backoff_max_seconds
                ),
            )
            cursor.execute(
                self._q(
                    "UPDATE jobs SET state = ?, lease_owner = NULL, lease_expires_at = NULL, "
                    "last_error = ?, error_kind = ?, next_attempt_at = ?, finished_at = ? "
                    "WHERE id = ?"
                ),
                (
                    state.value,
                    error[:2000],
                    "permanent" if permanent else "transient",
                    now + delay,
                    now if state in TERMINAL else None,
                    job_id,
                ),
            )
            self._finish_attempt(cursor, job, now, state.value, error)
            return state

    def postpone(self, job_id: int, worker: str, delay: float, reason: str) -> None:
        """Back to pending without spending an attempt (the service said 429: busy, not broken)."""
        now = time.time()
        with self._transaction() as cursor:
            job = self._owned(cursor, job_id, worker)
            if job is None:
                return
            cursor.execute(
                self._q(
                    "UPDATE jobs SET state = 'pending', attempts = attempts - 1, "
                    "lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = ? "
                    "WHERE id = ?"
                ),
                (now + delay, job_id),
            )
            cursor.execute(
                self._q("DELETE FROM job_attempts WHERE job_id = ? AND finished_at IS NULL"),
                (job_id,),
            )

    def _validated(self, cursor: Any, analysis_id: str | None) -> bool:
        """Whether the analysis's results may go to the clinical destination: it was sent as
        validated, or the site has since marked its installed model validated."""
        cursor.execute(
            self._q(
                "SELECT a.validated, coalesce(v.validated, 0) FROM analyses a "
                "LEFT JOIN validated_models v ON v.model_name = a.installed_model "
                "WHERE a.analysis_id = ?"
            ),
            (analysis_id,),
        )
        row = cursor.fetchone()
        return row is not None and bool(row[0] or row[1])

    def _owned(self, cursor: Any, job_id: int, worker: str) -> Job | None:
        cursor.execute(
            self._q(f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND lease_owner = ?"),
            (job_id, worker),
        )
        row = cursor.fetchone()
        return Job.from_row(row) if row else None

    def _finish_attempt(
        self, cursor: Any, job: Job, now: float, outcome: str, error: str | None
    ) -> None:
        cursor.execute(
            self._q(
                "UPDATE job_attempts SET finished_at = ?, outcome = ?, error = ? "
                "WHERE job_id = ? AND finished_at IS NULL"
            ),
            (now, outcome, (error or "")[:2000] or None, job.id),
        )

    # -- the job API -----------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with self._transaction() as cursor:
            cursor.execute(self._q(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?"), (job_id,))
            row = cursor.fetchone()
            if row is None:
                return None
            job = Job.from_row(row)
            cursor.execute(
                self._q(
                    "SELECT attempt, worker, started_at, finished_at, outcome, error "
                    "FROM job_attempts WHERE job_id = ? ORDER BY attempt"
                ),
                (job_id,),
            )
            names = ("attempt", "worker", "started_at", "finished_at", "outcome", "error")
            job.history = [dict(zip(names, attempt, strict=True)) for attempt in cursor.fetchall()]
            return job

    def search(
        self,
        state: str | None = None,
        study_instance_uid: str | None = None,
        model: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        where, params = [], []
        for column, value in (
            ("state", state),
            ("study_instance_uid", study_instance_uid),
            ("model", model),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._transaction() as cursor:
            cursor.execute(self._q(f"SELECT count(*) FROM jobs{clause}"), params)
            total = int(cursor.fetchone()[0])
            cursor.execute(
                self._q(f"SELECT {_COLUMNS} FROM jobs{clause} ORDER BY id LIMIT ? OFFSET ?"),
                [*params, limit, offset],
            )
            return [Job.from_row(row) for row in cursor.fetchall()], total

    def retry(self, job_id: int) -> Job | None:
        """Run a finished job again now (attempts start over)."""
        now = time.time()
        with self._transaction() as cursor:
            cursor.execute(
                self._q(
                    "UPDATE jobs SET state = 'pending', attempts = 0, next_attempt_at = ?, "
                    "enqueued_at = ?, last_error = NULL, error_kind = NULL "
                    "WHERE id = ? AND state IN ('succeeded', 'failed', 'dead') "
                    f"RETURNING {_COLUMNS}"
                ),
                (now, now, job_id),
            )
            row = cursor.fetchone()
            return Job.from_row(row) if row else None

    def delete(self, job_id: int) -> bool:
        with self._transaction() as cursor:
            cursor.execute(self._q("DELETE FROM job_attempts WHERE job_id = ?"), (job_id,))
            cursor.execute(self._q("DELETE FROM jobs WHERE id = ?"), (job_id,))
            return bool(cursor.rowcount)

    def depth_by_state(self) -> dict[str, int]:
        with self._transaction() as cursor:
            cursor.execute("SELECT state, count(*) FROM jobs GROUP BY state")
            counts = {state.value: 0 for state in JobState}
            counts.update({state: int(count) for state, count in cursor.fetchall()})
            return counts

    def study_jobs_finished(self, study_instance_uid: str) -> float | None:
        """When the last job of the study ended, or None while any job is still to run."""
        with self._transaction() as cursor:
            cursor.execute(
                self._q(
                    "SELECT count(*), max(finished_at), "
                    "sum(CASE WHEN state IN ('pending', 'running') THEN 1 ELSE 0 END) "
                    "FROM jobs WHERE study_instance_uid = ?"
                ),
                (study_instance_uid,),
            )
            count, finished, open_jobs = cursor.fetchone()
            if not count or open_jobs:
                return None
            return float(finished) if finished is not None else None
