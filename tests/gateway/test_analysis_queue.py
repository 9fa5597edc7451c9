"""Analyses at a site and the research lane of the job queue (issue 17, items 3-4), on SQLite
and on a real PostgreSQL (the ``settings`` fixture of tests/gateway/conftest.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.analysis.records import Analysis
from gateway.analysis.store import AnalysisStore
from gateway.queue import Database, JobQueue, JobState, QueueSettings

BUNDLE = "ab" * 32
COHORT = {"modality": "CT"}


def analysis(analysis_id: str = "a" * 32, bundle: str = BUNDLE) -> Analysis:
    return Analysis(
        analysis_id=analysis_id,
        hub="consortium",
        bundle_sha256=bundle,
        model_name="nodule-detector",
        model_version="2.0.0",
        cohort=COHORT,
        validated=False,
        state="pending",
        received_at=time.time(),
    )


def open_both(settings: QueueSettings, tmp_path: Path) -> tuple[AnalysisStore, JobQueue]:
    database = Database.open(settings, tmp_path)
    return AnalysisStore(database), JobQueue(database)


def research(queue: JobQueue, analysis_id: str, series: str, model: str = "nd-abababababab"):  # type: ignore[no-untyped-def]
    return queue.enqueue(
        "1.2.3",
        series,
        model,
        f"analysis:{analysis_id}",
        "http://inference",
        "http://gw",
        lane="research",
        analysis_id=analysis_id,
    )


def clinical(queue: JobQueue, series: str):  # type: ignore[no-untyped-def]
    return queue.enqueue(
        "1.2.4", series, "nodule-detector", "chest-ct", "http://inference", "http://gw"
    )


def test_receive_is_idempotent_and_a_changed_bundle_is_refused(
    settings: QueueSettings, tmp_path: Path
) -> None:
    store = AnalysisStore.open(settings, tmp_path)
    first = store.receive(analysis())
    assert first.state == "pending" and first.cohort == COHORT and not first.validated
    again = store.receive(analysis())  # the hub sent it twice
    assert again == first and len(store.list()) == 1
    with pytest.raises(ValueError, match="a changed bundle is a new analysis"):
        store.receive(analysis(bundle="cd" * 32))
    assert store.get("a" * 32) == first and store.get("b" * 32) is None
    store.close()


def test_transitions_are_enforced_and_recorded(settings: QueueSettings, tmp_path: Path) -> None:
    store = AnalysisStore.open(settings, tmp_path)
    store.receive(analysis())
    with pytest.raises(ValueError, match="from pending to paused"):
        store.set_state("a" * 32, "paused", by="admin")
    assert store.set_state("a" * 32, "running", by="admin alice").state == "running"
    assert store.set_state("a" * 32, "paused", by="admin bob").state == "paused"
    with pytest.raises(ValueError, match="from paused to done"):
        store.set_state("a" * 32, "done", by="runner")
    store.set_state("a" * 32, "running", by="admin bob")
    store.set_state("a" * 32, "done", by="runner")
    with pytest.raises(ValueError, match="from done to running"):
        store.set_state("a" * 32, "running", by="admin")
    history = store.history("a" * 32)
    assert [(h["from"], h["to"], h["by"]) for h in history] == [
        ("pending", "running", "admin alice"),
        ("running", "paused", "admin bob"),
        ("paused", "running", "admin bob"),
        ("running", "done", "runner"),
    ]
    assert all(h["at"] >= store.get("a" * 32).received_at for h in history)  # type: ignore[union-attr]
    store.receive(analysis("c" * 32))
    assert store.set_state("c" * 32, "refused", by="admin").state == "refused"
    with pytest.raises(KeyError):
        store.set_state("f" * 32, "running", by="admin")
    store.close()


def test_clinical_jobs_go_first_and_research_is_throttled(
    settings: QueueSettings, tmp_path: Path
) -> None:
    store, queue = open_both(settings, tmp_path)
    store.receive(analysis())
    store.set_state("a" * 32, "running", by="admin")
    for n in range(5):  # the backfill is enqueued first...
        research(queue, "a" * 32, f"1.2.3.{n}")
    for n in range(2):  # ...then two studies arrive from the PACS
        clinical(queue, f"1.2.4.{n}")
    # No research job starts beside clinical ones (they would share the inference service).
    first = queue.claim("w1", 3, {}, 10, research_max_running=1)
    assert [job.lane for job in first] == ["clinical", "clinical"]
    assert queue.claim("w2", 10, {}, 10, research_max_running=1) == []
    queue.succeed(first[0].id, "w1", {"findings": []})
    assert queue.claim("w2", 10, {}, 10, research_max_running=1) == []  # one still runs
    queue.succeed(first[1].id, "w1", {"findings": []})
    (research_job,) = queue.claim("w1", 3, {}, 10, research_max_running=1)
    assert research_job.lane == "research"
    # One research job runs (throttle 1): another replica gets none, however many slots.
    assert queue.claim("w2", 10, {}, 10, research_max_running=1) == []
    assert research_job.results_to_research  # the model is not validated
    queue.succeed(research_job.id, "w1", {"findings": []})
    (next_job,) = queue.claim("w2", 10, {}, 10, research_max_running=1)
    assert next_job.lane == "research" and next_job.analysis_id == "a" * 32
    # A clinical job enqueued behind a waiting backfill is still claimed first.
    clinical(queue, "1.2.4.9")
    assert [job.lane for job in queue.claim("w3", 1, {}, 10, research_max_running=2)] == [
        "clinical"
    ]


def test_research_may_fill_the_slots_clinical_work_leaves_free(
    settings: QueueSettings, tmp_path: Path
) -> None:
    """``pipeline.research.wait_for_clinical: false``: for a site never without clinical work."""
    store, queue = open_both(settings, tmp_path)
    store.receive(analysis())
    store.set_state("a" * 32, "running", by="admin")
    for n in range(5):
        research(queue, "a" * 32, f"1.2.3.{n}")
    for n in range(2):
        clinical(queue, f"1.2.4.{n}")
    claimed = queue.claim(
        "w1", 3, {}, 10, research_max_running=1, research_waits_for_clinical=False
    )
    assert [job.lane for job in claimed] == ["clinical", "clinical", "research"]
    assert queue.claim("w2", 10, {}, 10, 1, research_waits_for_clinical=False) == []


def test_pause_resume_and_cancel(settings: QueueSettings, tmp_path: Path) -> None:
    store, queue = open_both(settings, tmp_path)
    store.receive(analysis())
    for n in range(4):
        research(queue, "a" * 32, f"1.2.3.{n}")
    assert queue.claim("w1", 4, {}, 10, research_max_running=4) == []  # pending approval
    store.set_state("a" * 32, "running", by="admin")
    (running,) = queue.claim("w1", 1, {}, 10, research_max_running=4)
    store.set_state("a" * 32, "paused", by="admin")
    assert queue.claim("w1", 4, {}, 10, research_max_running=4) == []
    progress = store.progress("a" * 32)
    assert (progress.state, progress.selected, progress.queued, progress.running) == (
        "paused",
        4,
        3,
        1,
    )
    store.set_state("a" * 32, "running", by="admin")
    (resumed,) = queue.claim("w1", 1, {}, 10, research_max_running=4)
    store.set_state("a" * 32, "cancelled", by="admin")
    # The pending jobs are dropped; the two that run finish and are counted.
    assert queue.claim("w1", 4, {}, 10, research_max_running=4) == []
    queue.succeed(running.id, "w1", {"findings": []})
    queue.fail(resumed.id, "w1", "bad input", True, None)
    progress = store.progress("a" * 32)
    assert (progress.selected, progress.queued, progress.done, progress.failed) == (2, 0, 1, 1)


def test_a_cancelled_analysis_drops_the_job_whose_worker_died(
    settings: QueueSettings, tmp_path: Path
) -> None:
    store, queue = open_both(settings.model_copy(update={"lease_seconds": 0.2}), tmp_path)
    store.receive(analysis())
    store.set_state("a" * 32, "running", by="admin")
    for n in range(2):
        research(queue, "a" * 32, f"1.2.3.{n}")
    (lost,) = queue.claim("w1", 1, {}, 10)  # its worker dies: no heartbeat, no result
    store.set_state("a" * 32, "cancelled", by="admin")
    assert store.drop_lost_jobs() == 0  # the lease still holds: the worker may yet answer
    time.sleep(0.3)
    assert queue.claim("w2", 4, {}, 10, research_max_running=4) == []  # nobody takes it over
    assert store.progress("a" * 32).running == 1
    assert store.drop_lost_jobs() == 1
    progress = store.progress("a" * 32)
    assert (progress.selected, progress.running) == (0, 0)
    assert queue.get(lost.id) is None


def test_research_jobs_are_never_redone(settings: QueueSettings, tmp_path: Path) -> None:
    """Selecting an analysis's series again (a restart) leaves finished series as they are."""
    store, queue = open_both(settings, tmp_path)
    store.receive(analysis())
    store.set_state("a" * 32, "running", by="admin")
    job, what = research(queue, "a" * 32, "1.2.3.1")
    assert what == "created"
    (leased,) = queue.claim("w1", 1, {}, 10)
    queue.succeed(leased.id, "w1", {"findings": []})
    again, what = research(queue, "a" * 32, "1.2.3.1")
    assert (again.id, again.state, what) == (job.id, JobState.SUCCEEDED, "already selected")
    assert queue.claim("w1", 1, {}, 10) == []
    # Selecting in bulk (the runner's way) makes only the series not selected before.
    rows = [("1.2.3", f"1.2.3.{n}", "nd-abababababab", "r", "http://i", "http://g") for n in (1, 2)]
    assert queue.enqueue_research("a" * 32, rows) == 1
    assert queue.get(job.id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="needs its analysis_id"):
        queue.enqueue("1", "2", "m", "r", "http://i", "http://g", lane="research")


def test_validating_the_installed_model_sends_results_to_the_clinic(
    settings: QueueSettings, tmp_path: Path
) -> None:
    store, queue = open_both(settings, tmp_path)
    store.receive(analysis())
    store.set_state("a" * 32, "running", by="admin")
    installed = store.set_installed_model("a" * 32, "nodule-detector-abababababab")
    assert installed.installed_model == "nodule-detector-abababababab"
    for n in range(2):
        research(queue, "a" * 32, f"1.2.3.{n}", model=installed.installed_model)
    (before,) = queue.claim("w1", 1, {}, 10)
    assert before.results_to_research
    store.set_validated("nodule-detector-abababababab", True)
    assert store.get("a" * 32).validated  # type: ignore[union-attr]
    queue.succeed(before.id, "w1", {"findings": []})
    (after,) = queue.claim("w1", 1, {}, 10)
    assert not after.results_to_research
    with pytest.raises(KeyError):
        store.set_validated("never-installed", True)
