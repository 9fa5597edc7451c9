"""The pipeline on the embedded store: STOW-RS in, SR/SEG out, jobs visible in /jobs."""

from __future__ import annotations

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from sr_writer import read_findings
from tests.pipeline.conftest import (
    chest_phantom,
    finished_jobs,
    jobs,
    pipeline_settings,
    wait_until,
)
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess


def test_stow_to_the_gateway_yields_an_sr_whose_findings_match_the_truth(
    pipeline_gateway: GatewayProcess,
) -> None:
    phantom = chest_phantom(seed=600, lesions=(20.0,))
    client = DICOMwebClient(pipeline_gateway.dicomweb_url)
    client.store_instances(list(phantom.instances()))
    (job,) = wait_until(lambda: finished_jobs(pipeline_gateway, 1), 60, "the job to finish")
    assert job["state"] == "succeeded", job
    assert job["model"] == "nodule-detector" and job["rule"] == "chest-ct"
    assert job["series_instance_uid"] == phantom.truth.series_instance_uid
    assert job["findings_count"] == 1 and job["seg_sop_instance_uid"]
    assert job["timings"]

    truth = phantom.truth
    srs = client.search_for_instances(truth.study_instance_uid, search_filters={"Modality": "SR"})
    assert [sr["00080018"]["Value"][0] for sr in srs] == [job["sr_sop_instance_uid"]]
    sr = client.retrieve_instance(
        truth.study_instance_uid, srs[0]["0020000E"]["Value"][0], job["sr_sop_instance_uid"]
    )
    findings = read_findings(sr)
    (finding,) = findings.findings
    diameters = [m.value for m in finding.measurements if "iameter" in m.name.meaning]
    assert diameters and abs(diameters[0] - 20.0) / 20.0 < 0.10

    detail = httpx.get(f"{pipeline_gateway.url}/jobs/{job['id']}").json()
    assert [a["outcome"] for a in detail["history"]] == ["succeeded"]
    metrics = httpx.get(pipeline_gateway.url + "/metrics").text
    assert 'fedgate_jobs{state="succeeded"}' in metrics
    assert "fedgate_job_run_seconds_count" in metrics


def test_a_study_no_rule_matches_is_recorded_not_routed(pipeline_gateway: GatewayProcess) -> None:
    phantom = chest_phantom(seed=601, body_part="ABDOMEN")
    DICOMwebClient(pipeline_gateway.dicomweb_url).store_instances(list(phantom.instances()))

    def decision() -> str | None:
        log = pipeline_gateway.log()
        for line in log.splitlines():
            if "pipeline.not_routed" in line and phantom.truth.study_instance_uid in line:
                return line
        return None

    line = wait_until(decision, 20, "the routing decision")
    assert "BodyPartExamined is ABDOMEN, not CHEST" in line
    assert jobs(pipeline_gateway, study=phantom.truth.study_instance_uid) == []


def test_forwarding_a_study_twice_makes_no_second_job_and_a_rerun_replaces_the_sr(
    pipeline_gateway: GatewayProcess,
) -> None:
    phantom = chest_phantom(seed=602)
    client = DICOMwebClient(pipeline_gateway.dicomweb_url)
    client.store_instances(list(phantom.instances()))
    client.store_instances(list(phantom.instances()))  # identical resend: nothing new
    (job,) = wait_until(lambda: finished_jobs(pipeline_gateway, 1), 60, "the first run")
    assert job["state"] == "succeeded"
    first_sr = job["sr_sop_instance_uid"]

    # One slice changed (a corrected instance): the series is re-evaluated and re-run.
    changed = next(phantom.instances())
    changed.WindowCenter = "-500"
    client.store_instances([changed])
    rerun = wait_until(
        lambda: [
            j
            for j in jobs(pipeline_gateway)
            if j["state"] == "succeeded" and j["finished_at"] > job["finished_at"]
        ],
        60,
        "the re-run",
    )
    assert len(jobs(pipeline_gateway)) == 1  # the same job ran again: no second one
    assert rerun[0]["sr_sop_instance_uid"] == first_sr  # deterministic UID: replaced
    srs = client.search_for_instances(
        phantom.truth.study_instance_uid, search_filters={"Modality": "SR"}
    )
    assert len(srs) == 1


def test_a_series_that_always_fails_ends_failed_and_others_keep_flowing(
    tmp_path,
    inference: InferenceProcess,  # type: ignore[no-untyped-def]
) -> None:
    gateway = GatewayProcess(tmp_path / "gw", pipeline_settings(inference.url)).start()
    try:
        client = DICOMwebClient(gateway.dicomweb_url)
        broken = chest_phantom(seed=603)
        datasets = list(broken.instances())
        del datasets[5]
        del datasets[6]  # gaps in the series: a permanent error
        client.store_instances(datasets)
        good = chest_phantom(seed=604)
        client.store_instances(list(good.instances()))
        finished = wait_until(lambda: finished_jobs(gateway, 2), 90, "both jobs to end")
        by_study = {j["study_instance_uid"]: j for j in finished}
        failed = by_study[broken.truth.study_instance_uid]
        assert failed["state"] == "failed" and failed["error_kind"] == "permanent"
        assert failed["last_error"]
        assert by_study[good.truth.study_instance_uid]["state"] == "succeeded"
        listed = jobs(gateway, state="failed")
        assert [j["id"] for j in listed] == [failed["id"]]
        retried = httpx.post(f"{gateway.url}/jobs/{failed['id']}/retry").json()
        assert retried["state"] == "pending"
        assert httpx.delete(f"{gateway.url}/jobs/{failed['id']}").status_code == 204
        assert httpx.get(f"{gateway.url}/jobs/{failed['id']}").status_code == 404
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        (
            {
                "name": "chest-ct",
                "match": {"Modalty": "CT"},
                "models": ["m"],
                "inference_url": "http://x",
            },
            "routing[chest-ct].match",
        ),
        (
            {
                "name": "bad-regex",
                "match": {"SeriesDescription": {"regex": "("}},
                "models": ["m"],
                "inference_url": "http://x",
            },
            "routing[bad-regex]",
        ),
        (
            {"name": "no-models", "models": [], "inference_url": "http://x"},
            "routing[no-models].models",
        ),
        (
            {"name": "bad-url", "models": ["m"], "inference_url": "ftp://x"},
            "routing[bad-url].inference_url",
        ),
    ],
)
def test_malformed_rules_stop_the_gateway_naming_the_rule(
    tmp_path,
    rule: dict,
    named: str,  # type: ignore[no-untyped-def, type-arg]
) -> None:
    import subprocess
    import sys

    import yaml

    from tests.support.gateway import REPO_ROOT

    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"routing": [rule], "data_dir": str(tmp_path / "d")}))
    result = subprocess.run(
        [sys.executable, "-m", "fedgate", "gateway", "--config", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert named in result.stderr
