"""Running a federated analysis at a site (issue 17, items 3 and 4), real processes throughout.

- A clinical study that arrives during a 200-study backfill gets its result first; at most
  one research job runs at a time; pause, resume and cancel act on the research jobs.
- A gateway stopped mid-analysis resumes without redoing finished series.
- An unvalidated model's results stay out of the clinical PACS (QIDO on Orthanc) but reach
  the findings index; after ``fedgate analysis validate-model`` its results go to the PACS.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from gateway.analysis.bundle import ModelBundle
from gateway.analysis.install import installable_tar
from gateway.index.findings_index import SQLITE_FILE_NAME
from tests.analysis.conftest import (
    BUNDLE_MODEL,
    INSTALL_TOKEN,
    abdomen_phantom,
    site_settings,
    store_studies,
    wait_until,
)
from tests.pipeline.conftest import chest_phantom, jobs
from tests.support.analysis import SiteAnalysis
from tests.support.gateway import GatewayProcess
from tests.support.inference import REPO_ROOT, InferenceProcess
from tests.support.orthanc import OrthancServer

BACKFILL_STUDIES = 200


@pytest.fixture
def site(
    tmp_path: Path, installing_inference_service: InferenceProcess
) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(
        tmp_path / "site", site_settings(installing_inference_service.url)
    ).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def research_jobs(gateway: GatewayProcess, analysis: SiteAnalysis) -> list[dict[str, Any]]:
    return [job for job in jobs(gateway) if job["analysis_id"] == analysis.analysis_id]


def sr_series(client: DICOMwebClient, study_uid: str) -> list[dict[str, Any]]:
    return list(client.search_for_series(study_uid, search_filters={"Modality": "SR"}))


def test_clinical_work_first_then_pause_resume_cancel(
    site: GatewayProcess, models_dir: Path
) -> None:
    backfill = [abdomen_phantom(seed=17_000 + n) for n in range(BACKFILL_STUDIES)]
    store_studies(site.dicomweb_url, backfill)
    analysis = SiteAnalysis(
        site, models_dir / BUNDLE_MODEL, cohort={"attributes": {"BodyPartExamined": "ABDOMEN"}}
    )
    analysis.approve()
    selected = analysis.wait_selected(BACKFILL_STUDIES)
    assert selected.selected == BACKFILL_STUDIES  # one series each, the cohort's studies only
    installed = analysis.get().installed_model
    assert installed is not None and installed.startswith(f"{BUNDLE_MODEL}-")
    assert installed != BUNDLE_MODEL  # its own name: the site's own model is untouched

    # A chest CT from the PACS arrives while the backfill runs.
    wait_until(lambda: analysis.progress().done >= 2, 120, "the backfill to be under way")
    chest = chest_phantom(seed=17_900, lesions=())
    arrived = time.monotonic()
    DICOMwebClient(site.dicomweb_url).store_instances(list(chest.instances()))
    most_running = 0

    def clinical_result() -> dict[str, Any] | None:
        nonlocal most_running
        most_running = max(most_running, analysis.progress().running)
        found = jobs(site, study=chest.truth.study_instance_uid)
        return found[0] if found and found[0]["state"] == "succeeded" else None

    clinical = wait_until(clinical_result, 60, "the clinical study's result", step=0.1)
    clinical_seconds = time.monotonic() - arrived
    during = analysis.progress()
    assert clinical["lane"] == "clinical" and clinical["model"] == "nodule-detector"
    assert during.queued > 0, f"the backfill ended before the clinical result: {during}"
    assert most_running <= 1, "more research jobs ran at once than the throttle allows"
    print(f"clinical result {clinical_seconds:.1f} s after arrival; backfill at {during}")

    # The research results are in the research store, not at /dicomweb (the embedded store is
    # the PACS here): radiologists never see them.
    done = [job for job in research_jobs(site, analysis) if job["state"] == "succeeded"]
    assert done
    study_uid = done[0]["study_instance_uid"]
    research_client = DICOMwebClient(site.url + "/research/dicomweb")
    assert sr_series(research_client, study_uid)
    assert sr_series(DICOMwebClient(site.dicomweb_url), study_uid) == []

    # Pause: the running job ends, no other starts.
    analysis.set_state("paused")
    wait_until(lambda: analysis.progress().running == 0, 60, "the running research job to end")
    paused_done = analysis.progress().done
    time.sleep(3)
    assert analysis.progress().done == paused_done and analysis.progress().running == 0

    # Resume: the backfill continues.
    analysis.set_state("running")
    wait_until(lambda: analysis.progress().done > paused_done, 60, "the backfill to resume")

    # Cancel: the jobs not started are dropped; those running finish.
    analysis.set_state("cancelled")
    after = wait_until(
        lambda: (p := analysis.progress()).running == 0 and p, 60, "the last research job to end"
    )
    assert after.state == "cancelled" and after.queued == 0
    assert 0 < after.selected < BACKFILL_STUDIES and after.selected == after.done + after.failed
    time.sleep(2)
    assert analysis.progress() == after  # nothing starts again


def test_a_gateway_stopped_mid_analysis_resumes_without_redoing_finished_series(
    tmp_path: Path, installing_inference_service: InferenceProcess, models_dir: Path
) -> None:
    gateway = GatewayProcess(tmp_path / "site", site_settings(installing_inference_service.url))
    gateway.start()
    try:
        store_studies(gateway.dicomweb_url, [abdomen_phantom(seed=17_500 + n) for n in range(6)])
        analysis = SiteAnalysis(gateway, models_dir / BUNDLE_MODEL, cohort={})
        analysis.approve()
        wait_until(lambda: analysis.progress().done >= 2, 120, "two research jobs to finish")
        gateway.kill()  # a crash: the running job's lease is left behind
        before = {job["id"]: job for job in research_jobs_offline(gateway, analysis)}
        finished = {i: j for i, j in before.items() if j["state"] == "succeeded"}
        assert len(before) == 6 and len(finished) >= 2

        gateway.start()
        wait_until(lambda: analysis.get().state == "done", 180, "the analysis to be done")
        after = {job["id"]: job for job in research_jobs(gateway, analysis)}
        assert set(after) == set(before)  # no series selected twice
        assert all(job["state"] == "succeeded" for job in after.values())
        for job_id, job in finished.items():  # finished before the stop: not run again
            assert after[job_id]["finished_at"] == job["finished_at"]
            assert after[job_id]["attempts"] == job["attempts"] == 1
    finally:
        gateway.stop()


def research_jobs_offline(gateway: GatewayProcess, analysis: SiteAnalysis) -> list[dict[str, Any]]:
    """The analysis's jobs read from the queue's database while the gateway is down."""
    with sqlite3.connect(gateway.data_dir / "queue.sqlite") as connection:
        rows = connection.execute(
            "SELECT id, state, finished_at, attempts FROM jobs WHERE analysis_id = ?",
            (analysis.analysis_id,),
        ).fetchall()
    return [dict(zip(("id", "state", "finished_at", "attempts"), row, strict=True)) for row in rows]


def orthanc_srs(orthanc: OrthancServer, study_uids: list[str]) -> int:
    client = DICOMwebClient(orthanc.dicomweb_url)
    return sum(
        len(client.search_for_instances(uid, search_filters={"Modality": "SR"}))
        for uid in study_uids
    )


def index_reports(gateway: GatewayProcess) -> int:
    with sqlite3.connect(gateway.data_dir / SQLITE_FILE_NAME) as connection:
        return int(connection.execute("SELECT count(*) FROM reports").fetchone()[0])


def fedgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedgate", *args],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


STUDIES = 10


@pytest.mark.orthanc
def test_unvalidated_results_stay_out_of_the_pacs_until_the_model_is_validated(
    tmp_path: Path,
    orthanc: OrthancServer,
    installing_inference_service: InferenceProcess,
    models_dir: Path,
) -> None:
    gateway = GatewayProcess(
        tmp_path / "site",
        site_settings(
            installing_inference_service.url,
            pacs={"url": orthanc.dicomweb_url},
            ingest={"forward_to_pacs": True},
        ),
    )
    gateway.start()
    try:
        # Enough studies that the pause below lands mid-backfill however fast the jobs run.
        phantoms = [abdomen_phantom(seed=17_700 + n) for n in range(STUDIES)]
        study_uids = [p.truth.study_instance_uid for p in phantoms]
        store_studies(gateway.dicomweb_url, phantoms)  # indexed here, forwarded to Orthanc
        wait_until(
            lambda: len(DICOMwebClient(orthanc.dicomweb_url).search_for_studies()) == STUDIES,
            60,
            "the studies in Orthanc",
        )
        analysis = SiteAnalysis(gateway, models_dir / BUNDLE_MODEL, cohort={})
        analysis.approve()
        # Selected from the PACS by QIDO-RS.
        wait_until(lambda: analysis.progress().done >= 1, 120, "a first research result", step=0.05)
        analysis.set_state("paused")
        paused = wait_until(
            lambda: (p := analysis.progress()).running == 0 and p, 60, "the running job to end"
        )
        research_results = paused.done
        assert orthanc_srs(orthanc, study_uids) == 0  # nothing reached the clinical PACS
        assert index_reports(gateway) == research_results  # but the index counts them

        installed = analysis.get().installed_model
        assert installed is not None
        validated = fedgate(
            "analysis", "validate-model", "--config", gateway_config(gateway), installed
        )
        assert validated.returncode == 0, validated.stderr
        assert analysis.get().validated
        resumed = fedgate(
            "analysis", "resume", "--config", gateway_config(gateway), analysis.analysis_id
        )
        assert resumed.returncode == 0, resumed.stderr

        wait_until(lambda: analysis.get().state == "done", 120, "the analysis to be done")
        clinical_results = analysis.progress().done - research_results
        assert clinical_results == STUDIES - research_results > 0
        wait_until(
            lambda: orthanc_srs(orthanc, study_uids) == clinical_results,
            60,
            "the validated model's results in Orthanc",
        )
        assert index_reports(gateway) == STUDIES
        research = DICOMwebClient(gateway.url + "/research/dicomweb").search_for_instances(
            search_filters={"Modality": "SR"}
        )
        assert len(research) == research_results
        listed = fedgate("analysis", "list", "--config", gateway_config(gateway))
        assert f"{analysis.analysis_id}  done" in listed.stdout and "validated" in listed.stdout
    finally:
        gateway.stop()


def gateway_config(gateway: GatewayProcess) -> str:
    return str(gateway.workdir / "gateway.yaml")


def test_a_changed_bundle_under_a_taken_name_leaves_the_installed_model_untouched(
    site: GatewayProcess, installing_inference_service: InferenceProcess, models_dir: Path
) -> None:
    """The runner's name for a bundle is its own; the service refuses to overwrite it."""
    store_studies(site.dicomweb_url, [abdomen_phantom(seed=17_800)])
    analysis = SiteAnalysis(site, models_dir / BUNDLE_MODEL, cohort={})
    analysis.approve()
    wait_until(lambda: analysis.get().state == "done", 120, "the analysis to be done")
    installed = analysis.get().installed_model
    assert installed is not None
    before = httpx.get(
        f"{installing_inference_service.url}/v2/models/{installed}", timeout=10
    ).json()
    # Another bundle (the detector) sent under the presence bundle's installed name.
    other = ModelBundle.read(models_dir / "nodule-detector")
    response = httpx.put(
        f"{installing_inference_service.url}/v2/repository/models/{installed}",
        content=installable_tar(other, installed),
        headers={"Authorization": f"Bearer {INSTALL_TOKEN}"},
        timeout=60,
    )
    assert response.status_code == 409
    after = httpx.get(
        f"{installing_inference_service.url}/v2/models/{installed}", timeout=10
    ).json()
    assert after == before
