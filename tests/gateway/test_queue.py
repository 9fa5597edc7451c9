"""The durable job queue and the stability ledger, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gateway.queue import Database, JobQueue, JobState, QueueSettings, StabilityLedger


def open_queue(settings: QueueSettings, tmp_path: Path) -> JobQueue:
    return JobQueue(Database.open(settings, tmp_path))


def enqueue(queue: JobQueue, series: str = "1.2.3.2", model: str = "nodule-detector"):  # type: ignore[no-untyped-def]
    return queue.enqueue("1.2.3", series, model, "chest-ct", "http://inference", "http://gw")


def test_enqueue_is_idempotent_while_pending(settings: QueueSettings, tmp_path: Path) -> None:
    queue = open_queue(settings, tmp_path)
    job, what = enqueue(queue)
    assert what == "created" and job.state is JobState.PENDING
    again, what = enqueue(queue)
    assert (again.id, what) == (job.id, "already pending")
    assert queue.search()[1] == 1


def test_lifecycle_success_then_rerun_replaces(settings: QueueSettings, tmp_path: Path) -> None:
    queue = open_queue(settings, tmp_path)
    job, _ = enqueue(queue)
    (leased,) = queue.claim("w1", 10, {}, 4)
    assert leased.id == job.id and leased.state is JobState.RUNNING and leased.attempts == 1
    result = {
        "sr_sop_instance_uid": "1.2.9",
        "seg_sop_instance_uid": None,
        "findings": [{}],
        "timings": {"model": 0.1},
    }
    assert queue.succeed(job.id, "w1", result) is JobState.SUCCEEDED
    done = queue.get(job.id)
    assert done is not None and done.sr_sop_instance_uid == "1.2.9" and done.findings_count == 1
    assert [a["outcome"] for a in done.history] == ["succeeded"]
    rerun, what = enqueue(queue)
    assert what == "requeued" and rerun.id == job.id and rerun.state is JobState.PENDING


def test_new_instances_during_a_run_run_it_once_more(
    settings: QueueSettings, tmp_path: Path
) -> None:
    queue = open_queue(settings, tmp_path)
    job, _ = enqueue(queue)
    queue.claim("w1", 1, {}, 4)
    _, what = enqueue(queue)
    assert what == "rerun after the running attempt"
    assert queue.succeed(job.id, "w1", {"findings": []}) is JobState.PENDING
    assert queue.claim("w1", 1, {}, 4)[0].id == job.id


def test_transient_errors_back_off_then_die(settings: QueueSettings, tmp_path: Path) -> None:
    queue = open_queue(settings, tmp_path)
    job, _ = enqueue(queue)
    states = []
    for _ in range(3):
        deadline = time.monotonic() + 5
        claimed = []
        while not claimed and time.monotonic() < deadline:
            claimed = queue.claim("w1", 1, {}, 4)
            time.sleep(0.02)
        states.append(queue.fail(job.id, "w1", "inference service unreachable", False, None))
    assert states == [JobState.PENDING, JobState.PENDING, JobState.DEAD]
    dead = queue.get(job.id)
    assert dead is not None and dead.error_kind == "transient" and dead.finished_at
    assert "unreachable" in (dead.last_error or "")
    assert len(dead.history) == 3


def test_permanent_error_fails_at_once(settings: QueueSettings, tmp_path: Path) -> None:
    queue = open_queue(settings, tmp_path)
    job, _ = enqueue(queue)
    queue.claim("w1", 1, {}, 4)
    assert queue.fail(job.id, "w1", "not a CT series", True, None) is JobState.FAILED
    assert queue.claim("w1", 1, {}, 4) == []
    retried = queue.retry(job.id)
    assert retried is not None and retried.state is JobState.PENDING and retried.attempts == 0


def test_busy_service_postpones_without_spending_an_attempt(
    settings: QueueSettings, tmp_path: Path
) -> None:
    queue = open_queue(settings, tmp_path)
    job, _ = enqueue(queue)
    queue.claim("w1", 1, {}, 4)
    queue.postpone(job.id, "w1", 0.2, "429")
    assert queue.claim("w1", 1, {}, 4) == []  # Retry-After honoured
    time.sleep(0.25)
    (again,) = queue.claim("w1", 1, {}, 4)
    assert again.attempts == 1


def test_expired_lease_is_taken_over_and_the_old_worker_is_ignored(
    settings: QueueSettings, tmp_path: Path
) -> None:
    queue = JobQueue(Database.open(settings.model_copy(update={"lease_seconds": 0.2}), tmp_path))
    job, _ = enqueue(queue)
    queue.claim("crashed-worker", 1, {}, 4)
    assert queue.claim("w2", 1, {}, 4) == []  # lease still valid
    time.sleep(0.3)
    (taken,) = queue.claim("w2", 1, {}, 4)
    assert taken.id == job.id and taken.attempts == 2 and taken.lease_owner == "w2"
    assert queue.succeed(job.id, "crashed-worker", {"findings": []}) is None
    assert queue.succeed(job.id, "w2", {"findings": []}) is JobState.SUCCEEDED
    history = queue.get(job.id).history  # type: ignore[union-attr]
    assert [a["outcome"] for a in history] == ["lease expired", "succeeded"]


def test_per_model_concurrency_limit(settings: QueueSettings, tmp_path: Path) -> None:
    queue = open_queue(settings, tmp_path)
    for index in range(4):
        enqueue(queue, series=f"1.2.3.{index}", model="slow-model")
    enqueue(queue, series="1.2.3.9", model="fast-model")
    claimed = queue.claim("w1", 10, {"slow-model": 2}, 8)
    assert sorted(j.model for j in claimed) == ["fast-model", "slow-model", "slow-model"]
    assert queue.claim("w1", 10, {"slow-model": 2}, 8) == []


def test_two_workers_take_each_job_exactly_once(settings: QueueSettings, tmp_path: Path) -> None:
    first = open_queue(settings, tmp_path)
    second = open_queue(settings, tmp_path)  # its own connection, as another replica would
    for index in range(40):
        enqueue(first, series=f"1.2.4.{index}")
    taken: list[int] = []
    lock = threading.Lock()

    def work(queue: JobQueue, name: str) -> None:
        while True:
            jobs = queue.claim(name, 3, {}, 100)
            if not jobs:
                return
            for job in jobs:
                with lock:
                    taken.append(job.id)
                queue.succeed(job.id, name, {"findings": []})

    threads = [threading.Thread(target=work, args=(q, n)) for q, n in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(set(taken)) and len(taken) == 40
    assert first.depth_by_state()["succeeded"] == 40


def test_delete_and_depth(settings: QueueSettings, tmp_path: Path) -> None:
    queue = open_queue(settings, tmp_path)
    job, _ = enqueue(queue)
    assert queue.depth_by_state()["pending"] == 1
    assert queue.delete(job.id) is True
    assert queue.get(job.id) is None
    assert queue.delete(job.id) is False


def test_stability_ledger_routes_each_arrival_once(settings: QueueSettings, tmp_path: Path) -> None:
    ledger = StabilityLedger(Database.open(settings, tmp_path))
    t0 = time.time()
    ledger.touch_series([("1.2.3", "1.2.3.1"), ("1.2.3", "1.2.3.2")], "gw-a", t0)
    assert ledger.claim_stable("gw-a", quiet_since=t0 - 1) == {}  # still receiving
    assert ledger.claim_stable("gw-b", quiet_since=t0 + 1) == {}  # not its study
    stable = ledger.claim_stable("gw-a", quiet_since=t0 + 1)
    assert {k: sorted(v) for k, v in stable.items()} == {"1.2.3": ["1.2.3.1", "1.2.3.2"]}
    assert ledger.claim_stable("gw-a", quiet_since=t0 + 1) == {}  # evaluated once
    time.sleep(0.01)
    later = time.time()
    ledger.touch_series([("1.2.3", "1.2.3.2")], "gw-a", later)  # reopened by a late instance
    assert ledger.claim_stable("gw-a", quiet_since=later + 1) == {"1.2.3": ["1.2.3.2"]}


def test_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    settings = QueueSettings()
    database = Database.open(settings, tmp_path)
    with database.transaction() as cursor:
        cursor.execute("INSERT INTO fedgate_schema VALUES ('queue', 999, '0999_future.sql', '')")
    database.close()
    with pytest.raises(RuntimeError, match="newer than this fedgate"):
        Database.open(settings, tmp_path)
