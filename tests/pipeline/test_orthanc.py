"""The hospital set-up: modalities send to Orthanc, Orthanc forwards stable studies to the
gateway (deploy/orthanc's Lua script), results go back into Orthanc. Real processes only."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom
from sr_writer import read_findings
from tests.pipeline.conftest import (
    chest_phantom,
    chest_rule,
    finished_jobs,
    jobs,
    pipeline_settings,
    wait_until,
)
from tests.sr_writer.dicomtools import assert_conformant
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.requirements import require_executable

pytestmark = pytest.mark.orthanc


class Site:
    """An Orthanc that forwards to a gateway that writes results back into it."""

    def __init__(self, workdir: Path, inference_url: str, **settings: Any):
        self.gateway = GatewayProcess(workdir / "gateway")
        self.gateway.port = free_port()
        self.orthanc = OrthancServer(workdir / "orthanc", forward_to=self.gateway.dicomweb_url)
        self.orthanc.http_port, self.orthanc.dicom_port = free_port(), free_port()
        self.gateway.settings = pipeline_settings(
            inference_url, pacs={"url": self.orthanc.dicomweb_url, "retries": 1}, **settings
        )

    def start(self) -> Site:
        self.gateway.start()
        self.orthanc.start()
        return self

    def stop(self) -> None:
        self.orthanc.stop()
        self.gateway.stop()

    @property
    def pacs(self) -> DICOMwebClient:
        return DICOMwebClient(self.orthanc.dicomweb_url)

    def storescu(self, phantom: Phantom, folder: Path) -> None:
        """DCMTK storescu to Orthanc's DICOM port, as a modality would."""
        files = phantom.write(folder / phantom.truth.series_instance_uid)
        subprocess.run(
            [
                require_executable("storescu"),
                "-aet",
                "CT-SCANNER",
                "-aec",
                self.orthanc.aet,
                "127.0.0.1",
                str(self.orthanc.dicom_port),
                *map(str, files),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def results_in_pacs(self, study_uid: str) -> dict[str, list[str]] | None:
        found: dict[str, list[str]] = {}
        for modality in ("SR", "SEG"):
            instances = self.pacs.search_for_instances(
                study_uid, search_filters={"Modality": modality}
            )
            found[modality] = [i["00080018"]["Value"][0] for i in instances]
        return found if found["SR"] and found["SEG"] else None


@pytest.fixture
def site(tmp_path: Path, inference: InferenceProcess) -> Iterator[Site]:
    running = Site(tmp_path, inference.url).start()
    try:
        yield running
    finally:
        running.stop()


def test_storescu_to_orthanc_then_sr_and_seg_appear_in_orthanc(site: Site, tmp_path: Path) -> None:
    phantom = chest_phantom(seed=700, lesions=(10.0, 20.0))
    site.storescu(phantom, tmp_path / "files")
    truth = phantom.truth
    found = wait_until(
        lambda: site.results_in_pacs(truth.study_instance_uid), 120, "the SR and SEG in Orthanc"
    )
    assert len(found["SR"]) == 1 and len(found["SEG"]) == 1
    (sr_uid,) = found["SR"]
    series_uid = site.pacs.search_for_instances(
        truth.study_instance_uid, search_filters={"SOPInstanceUID": sr_uid}
    )[0]["0020000E"]["Value"][0]
    findings = read_findings(
        site.pacs.retrieve_instance(truth.study_instance_uid, series_uid, sr_uid)
    )
    diameters = sorted(
        m.value for f in findings.findings for m in f.measurements if "iameter" in m.name.meaning
    )
    assert len(diameters) == 2
    for measured, expected in zip(diameters, (10.0, 20.0), strict=True):
        assert abs(measured - expected) / expected < 0.10
    (job,) = jobs(site.gateway)
    assert job["sr_sop_instance_uid"] == sr_uid and job["state"] == "succeeded"
    # What the PACS holds, byte for byte (Orthanc's own copy, not a re-encoding), conforms.
    for uid in found["SR"] + found["SEG"]:
        path = tmp_path / f"{uid}.dcm"
        path.write_bytes(site.orthanc.stored_file(uid))
        assert_conformant(path)


def test_kill_9_of_the_gateway_mid_job_then_every_job_completes_once(
    tmp_path: Path, inference: InferenceProcess
) -> None:
    site = Site(tmp_path, inference.url, queue={"lease_seconds": 3, "max_attempts": 10}).start()
    try:
        # Larger series, so that analyses take long enough to be caught running.
        phantoms = [
            chest_phantom(
                seed=710 + i,
                rows=256,
                columns=256,
                slices=96,
                pixel_spacing_mm=0.75,
                slice_thickness_mm=1.0,
            )
            for i in range(3)
        ]
        for phantom in phantoms:
            site.storescu(phantom, tmp_path / "files")
        wait_until(
            lambda: [j for j in jobs(site.gateway) if j["state"] == "running"],
            90,
            "a running job",
            step=0.05,
        )
        site.gateway.kill()
        site.gateway.start()  # same port, same data directory: the queue survived
        wait_until(lambda: finished_jobs(site.gateway, 3), 180, "all jobs to finish")
        assert {j["state"] for j in jobs(site.gateway)} == {"succeeded"}
        for phantom in phantoms:
            study = phantom.truth.study_instance_uid
            found = wait_until(lambda s=study: site.results_in_pacs(s), 60, "results in Orthanc")
            assert len(found["SR"]) == 1 and len(found["SEG"]) == 1  # exactly one per series
    finally:
        site.stop()


def test_inference_down_then_orthanc_down_nothing_lost_nothing_doubled(
    tmp_path: Path, models_dir: Path
) -> None:
    service = InferenceProcess(tmp_path / "inference", models_dir)
    service.port = free_port()
    site = Site(
        tmp_path,
        service.url,
        queue={"max_attempts": 30, "backoff_seconds": 0.5, "backoff_max_seconds": 3},
    ).start()
    try:
        # Phase 1: the inference service is down for 20 s while a study waits.
        first = chest_phantom(seed=720)
        site.storescu(first, tmp_path / "files")
        wait_until(
            lambda: [j for j in jobs(site.gateway) if j["attempts"] >= 1],
            60,
            "a failed attempt while the inference service is down",
        )
        time.sleep(20)
        service.start()
        (job,) = wait_until(lambda: finished_jobs(site.gateway, 1), 120, "the job after the outage")
        assert job["state"] == "succeeded" and job["attempts"] > 1
        wait_until(
            lambda: site.results_in_pacs(first.truth.study_instance_uid),
            60,
            "phase 1 results in Orthanc",
        )

        # Phase 2: Orthanc is down for 20 s while the results are written.
        second = chest_phantom(seed=721)
        DICOMwebClient(site.gateway.dicomweb_url).store_instances(list(second.instances()))
        site.orthanc.stop()
        wait_until(lambda: finished_jobs(site.gateway, 2), 120, "the second job")
        time.sleep(20)
        site.orthanc.start()  # same ports and storage
        found = wait_until(
            lambda: site.results_in_pacs(second.truth.study_instance_uid),
            120,
            "phase 2 results in Orthanc after its outage",
        )
        assert len(found["SR"]) == 1 and len(found["SEG"]) == 1
        assert len(site.results_in_pacs(first.truth.study_instance_uid)["SR"]) == 1  # type: ignore[index]
    finally:
        site.stop()
        service.stop()


def test_polling_an_archive_that_cannot_forward(
    tmp_path: Path, inference: InferenceProcess
) -> None:
    """No Lua, no forwarding: the gateway finds the new study by QIDO-RS and fetches it."""
    orthanc = OrthancServer(tmp_path / "orthanc").start()
    gateway = GatewayProcess(
        tmp_path / "gateway",
        pipeline_settings(
            inference.url,
            pacs={
                "url": orthanc.dicomweb_url,
                "poll": {"enabled": True, "interval_seconds": 1, "since": "20000101"},
            },
        ),
    ).start()
    try:
        phantom = chest_phantom(seed=730)
        DICOMwebClient(orthanc.dicomweb_url).store_instances(list(phantom.instances()))
        (job,) = wait_until(lambda: finished_jobs(gateway, 1), 120, "the polled study's job")
        assert job["state"] == "succeeded"
        results = wait_until(
            lambda: DICOMwebClient(orthanc.dicomweb_url).search_for_instances(
                phantom.truth.study_instance_uid, search_filters={"Modality": "SR"}
            ),
            60,
            "the SR in the archive",
        )
        assert len(results) == 1
        # Polled again and again, the study is not fetched a second time.
        time.sleep(3)
        assert len(jobs(gateway)) == 1
        assert gateway.log().count('"poll.study_fetched"') == 1
    finally:
        gateway.stop()
        orthanc.stop()


def test_polling_skips_a_study_whose_archive_copy_names_another_patient(
    tmp_path: Path,
) -> None:
    """The gateway holds study S of PAT-X; the archive has more of S, of PAT-Y (issue 13,
    item 2): the poller logs the refusals and does not fetch S again on every pass."""
    orthanc = OrthancServer(tmp_path / "orthanc").start()
    gateway = GatewayProcess(
        tmp_path / "gateway",
        {
            "pacs": {
                "url": orthanc.dicomweb_url,
                "poll": {"enabled": True, "interval_seconds": 0.5, "since": "20000101"},
            }
        },
    ).start()
    try:
        held, *in_archive = chest_phantom(750, (), rows=32, columns=32, slices=3).instances()
        held.PatientID = "PAT-X"
        for dataset in in_archive:
            dataset.PatientID = "PAT-Y"
        stored = DICOMwebClient(gateway.dicomweb_url).store_instances([held])
        assert len(stored.ReferencedSOPSequence) == 1  # into the gateway's own store
        DICOMwebClient(orthanc.dicomweb_url).store_instances(in_archive)
        wait_until(lambda: gateway.log().count('"poll.instance_skipped"') == 2, 30, "the refusals")
        time.sleep(3)  # six more passes
        assert gateway.log().count('"poll.study_fetched"') == 1
        assert gateway.log().count('"store.patient_mismatch_refused"') == 2
        catalog = sqlite3.connect(gateway.data_dir / "store" / "catalog.sqlite")
        assert catalog.execute("SELECT sop_instance_uid FROM instances").fetchall() == [
            (held.SOPInstanceUID,)
        ]
        assert catalog.execute("SELECT patient_id FROM studies").fetchall() == [("PAT-X",)]
        catalog.close()
    finally:
        gateway.stop()
        orthanc.stop()


def test_retention_empties_the_embedded_store_only_of_what_the_pacs_holds(
    tmp_path: Path, inference: InferenceProcess
) -> None:
    site = Site(
        tmp_path,
        inference.url,
        pipeline={"stable_after_seconds": 1, "workers": 2, "retention_seconds": 1},
    )
    site.start()
    try:
        from_pacs = chest_phantom(seed=740)
        site.storescu(from_pacs, tmp_path / "files")  # in Orthanc, forwarded to the gateway
        direct = chest_phantom(seed=741)  # straight to the gateway: nowhere else
        DICOMwebClient(site.gateway.dicomweb_url).store_instances(list(direct.instances()))
        wait_until(lambda: finished_jobs(site.gateway, 2), 90, "both jobs")
        for phantom in (from_pacs, direct):
            wait_until(
                lambda p=phantom: site.results_in_pacs(p.truth.study_instance_uid),
                60,
                "results in Orthanc",
            )
        store = site.gateway.data_dir / "store" / "instances"
        wait_until(
            lambda: not (store / from_pacs.truth.study_instance_uid).exists(),
            30,
            "the PACS's study to leave the embedded store",
        )
        time.sleep(3)  # several sweeps later, the study that exists nowhere else is still here
        assert (store / direct.truth.study_instance_uid).is_dir()
        assert '"retention.kept_not_in_pacs"' in site.gateway.log()
        # Reads of the removed study go to the PACS through the gateway.
        through_gateway = DICOMwebClient(site.gateway.dicomweb_url).search_for_instances(
            from_pacs.truth.study_instance_uid, search_filters={"Modality": "CT"}
        )
        assert len(through_gateway) == from_pacs.spec.slices
    finally:
        site.stop()


def _stable_study_seen(orthanc: OrthancServer, study_uid: str) -> bool:
    """Whether Orthanc has raised StableStudy for the study (its /changes log)."""
    changes = httpx.get(f"{orthanc.url}/changes", params={"limit": 10000}, timeout=10).json()
    for change in changes["Changes"]:
        if change["ChangeType"] == "StableStudy":
            found = httpx.get(f"{orthanc.url}/studies/{change['ID']}", timeout=10).json()
            if found["MainDicomTags"]["StudyInstanceUID"] == study_uid:
                return True
    return False


def test_a_study_orthanc_found_stable_is_analysed_without_a_second_wait(
    tmp_path: Path, inference: InferenceProcess
) -> None:
    """The shipped settings: the gateway waits 30 s for stability, unless the forwarder (the
    shipped Lua script, on Orthanc's StableStudy event) says it waited already. Also: the
    script logs no error for new series and does not send the results back."""
    site = Site(tmp_path, inference.url, pipeline={"stable_after_seconds": 30.0, "workers": 2})
    site.orthanc.overrides = {"StableAge": 3}  # the test's; the gateway's 30 s is the shipped one
    site.start()
    try:
        phantom = chest_phantom(seed=750)
        study = phantom.truth.study_instance_uid
        site.storescu(phantom, tmp_path / "files")
        wait_until(lambda: _stable_study_seen(site.orthanc, study), 60, "StableStudy", step=0.1)
        stable_at = time.monotonic()
        wait_until(lambda: site.results_in_pacs(study), 60, "results in Orthanc", step=0.1)
        seconds = time.monotonic() - stable_at
        print(f"Orthanc StableStudy -> SR and SEG in Orthanc: {seconds:.1f} s")
        assert seconds < 15, seconds
        log = site.gateway.log()
        assert '"pipeline.study_stable"' in log
        assert "declared stable by the sender (Fedgate-Study-Stable: Orthanc StableStudy)" in log

        # The results made the study change: Orthanc finds it stable again, and the script
        # must not send the gateway's own SR and SEG back to it.
        time.sleep(3 + 5)
        # Orthanc's own log file (--logdir: "Orthanc.log.<time>", and a link "Orthanc.log").
        orthanc_log = "".join(
            p.read_text(errors="replace") for p in site.orthanc.workdir.glob("Orthanc.log.*")
        )
        assert orthanc_log.count("fedgate: forwarded") == 1, orthanc_log[-3000:]
        assert "FedgateForwardedInstances" not in orthanc_log, orthanc_log[-3000:]
        received = [
            json.loads(line)["parts"]
            for line in site.gateway.log().splitlines()
            if '"stow.done"' in line
        ]
        # The CT from Orthanc, the SR and SEG from the inference service; nothing came back.
        assert received == [phantom.spec.slices, 2]
    finally:
        site.stop()


def test_rules_naming_a_model_not_served_are_found_at_start(
    tmp_path: Path, inference: InferenceProcess
) -> None:
    rule = chest_rule(inference.url, models=["nodule-detector", "no-such-model"])
    lenient = GatewayProcess(tmp_path / "lenient", pipeline_settings(inference.url, routing=[rule]))
    lenient.start()
    try:
        log = lenient.log()
        assert '"pipeline.model_not_served"' in log and "no-such-model" in log
        assert f'"listening_on": "http://127.0.0.1:{lenient.port}"' in log  # where it listens
    finally:
        lenient.stop()
    strict = GatewayProcess(
        tmp_path / "strict",
        pipeline_settings(inference.url, routing=[rule], pipeline={"require_served_models": True}),
    )
    with pytest.raises(RuntimeError, match="gateway did not start"):
        strict.start(timeout=15)
    assert "does not serve" in strict.log() and "no-such-model" in strict.log()
    strict.stop()
