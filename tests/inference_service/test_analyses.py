"""``POST /v1/analyses`` against a real Orthanc (source and destination) and a real service process.

The findings must come back from what landed in the archive: the SR is retrieved by WADO-RS and
read with ``sr_writer.read_findings``.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from sr_writer import ImageRegion, derive_result_uids, read_findings
from tests.inference_service import phantoms
from tests.inference_service.user_model import write_user_model
from tests.support.inference import InferenceProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.requirements import require_executable

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[InferenceProcess]:
    process = InferenceProcess(tmp_path_factory.mktemp("inference"), models_dir).start()
    try:
        yield process
    finally:
        process.stop()


def store(orthanc: OrthancServer, datasets: list[Dataset]) -> None:
    DICOMwebClient(orthanc.dicomweb_url).store_instances(datasets)


def analyse(
    service: InferenceProcess,
    orthanc: OrthancServer,
    model: str,
    study_uid: str,
    series_uid: str,
    **overrides: Any,
) -> httpx.Response:
    body = {
        "model": model,
        "study_instance_uid": study_uid,
        "series_instance_uid": series_uid,
        "source": {"url": orthanc.dicomweb_url},
        "destination": {"url": orthanc.dicomweb_url},
        **overrides,
    }
    return httpx.post(f"{service.url}/v1/analyses", json=body, timeout=120)


def retrieve(orthanc: OrthancServer, study: str, series: str, instance: str) -> Dataset:
    return DICOMwebClient(orthanc.dicomweb_url).retrieve_instance(study, series, instance)


def measurement(finding: Any, meaning: str) -> float:
    return next(m.value for m in finding.measurements if m.name.meaning == meaning)


@pytest.fixture(scope="module")
def three_lesions(shared_orthanc: OrthancServer) -> Phantom:
    phantom = generate_phantom(
        PhantomSpec(seed=31, rows=192, columns=192, slices=64, lesion_diameters_mm=(6, 10, 20))
    )
    store(shared_orthanc, list(phantom.instances()))
    return phantom


def test_detector_writes_sr_and_seg_that_read_back_within_tolerance(
    service: InferenceProcess, shared_orthanc: OrthancServer, three_lesions: Phantom, tmp_path: Path
) -> None:
    truth = three_lesions.truth
    response = analyse(
        service,
        shared_orthanc,
        "nodule-detector",
        truth.study_instance_uid,
        truth.series_instance_uid,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    uids = derive_result_uids(
        truth.study_instance_uid,
        truth.series_instance_uid,
        service_model_uid(service, "nodule-detector"),
        "1.0.0",
    )
    assert body["sr_sop_instance_uid"] == uids.sr_sop_instance_uid
    assert body["seg_sop_instance_uid"] == uids.seg_sop_instance_uid
    assert set(body["timings"]) >= {"fetch", "decode", "model", "sr_seg", "store", "total"}

    sr = retrieve(
        shared_orthanc,
        truth.study_instance_uid,
        uids.sr_series_instance_uid,
        uids.sr_sop_instance_uid,
    )
    stored = read_findings(sr)
    assert len(stored.findings) == len(truth.lesions) == 3
    assert stored.algorithm is not None and stored.algorithm.name == "nodule-detector"
    centroids = [lesion["centroid_mm"] for lesion in body["lesions"]]
    for lesion in truth.lesions:
        index = min(range(3), key=lambda i: math.dist(centroids[i], lesion.center_mm))
        assert math.dist(centroids[index], lesion.center_mm) < 1.0
        finding = next(f for f in stored.findings if f.tracking_identifier == f"Nodule {index + 1}")
        assert measurement(finding, "Diameter") == pytest.approx(lesion.diameter_mm, rel=0.10)
        assert measurement(finding, "Volume") == pytest.approx(lesion.volume_mm3, rel=0.15)
        # Drawn as a circle on the slice through the lesion (what OHIF shows).
        region = finding.region
        assert isinstance(region, ImageRegion) and region.graphic_type == "CIRCLE"
        assert region.sop_instance_uid in truth.sop_instance_uids
        (column, _row), (edge_column, _) = region.points
        radius_mm = (edge_column - column) * truth.pixel_spacing_mm
        assert radius_mm == pytest.approx(lesion.diameter_mm / 2, rel=0.15)
    # The response's findings are the SR's findings.
    for answered, read in zip(body["findings"], stored.findings, strict=True):
        assert answered["tracking_identifier"] == read.tracking_identifier
        assert answered["tracking_uid"] == read.tracking_uid
        assert [m["value"] for m in answered["measurements"]] == pytest.approx(
            [m.value for m in read.measurements]
        )

    seg = retrieve(
        shared_orthanc,
        truth.study_instance_uid,
        uids.seg_series_instance_uid,
        uids.seg_sop_instance_uid,
    )
    assert seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Nodule 1", "Nodule 2", "Nodule 3"]
    # Segment and finding share the tracking UID.
    assert {s.TrackingUID for s in seg.SegmentSequence} == {f.tracking_uid for f in stored.findings}
    # What landed in the archive conforms to its IOD (dicom3tools).
    verifier = require_executable("dciodvfy")
    for name, dataset in (("sr", sr), ("seg", seg)):
        path = tmp_path / f"{name}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        report = subprocess.run([verifier, str(path)], capture_output=True, text=True)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if "Error" in line]
        assert errors == [], f"{name}: {errors}"


def service_model_uid(service: InferenceProcess, name: str) -> str:
    models = httpx.get(f"{service.url}/v1/models").json()["models"]
    uid: str = next(m["algorithm_uid"] for m in models if m["name"] == name)
    return uid


def test_rerun_replaces_instead_of_adding(
    service: InferenceProcess, shared_orthanc: OrthancServer, three_lesions: Phantom
) -> None:
    truth = three_lesions.truth
    first = analyse(
        service,
        shared_orthanc,
        "nodule-detector",
        truth.study_instance_uid,
        truth.series_instance_uid,
    )
    second = analyse(
        service,
        shared_orthanc,
        "nodule-detector",
        truth.study_instance_uid,
        truth.series_instance_uid,
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["sr_sop_instance_uid"] == second.json()["sr_sop_instance_uid"]
    series = DICOMwebClient(shared_orthanc.dicomweb_url).search_for_series(
        truth.study_instance_uid, search_filters={"Modality": "SR"}
    )
    instances = sum(
        int(s["00201209"]["Value"][0]) for s in series
    )  # NumberOfSeriesRelatedInstances
    assert instances == 1


def test_lesion_free_phantom_gives_a_no_finding_report(
    service: InferenceProcess, shared_orthanc: OrthancServer
) -> None:
    phantom = generate_phantom(
        PhantomSpec(seed=32, rows=160, columns=160, slices=40, lesion_diameters_mm=())
    )
    store(shared_orthanc, list(phantom.instances()))
    truth = phantom.truth
    response = analyse(
        service,
        shared_orthanc,
        "nodule-detector",
        truth.study_instance_uid,
        truth.series_instance_uid,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["findings"] == [] and body["seg_sop_instance_uid"] is None
    uids = derive_result_uids(
        truth.study_instance_uid,
        truth.series_instance_uid,
        service_model_uid(service, "nodule-detector"),
        "1.0.0",
    )
    sr = retrieve(
        shared_orthanc,
        truth.study_instance_uid,
        uids.sr_series_instance_uid,
        body["sr_sop_instance_uid"],
    )
    stored = read_findings(sr)
    assert stored.findings == ()
    assert len(stored.evidence.instances) == 40

    presence = analyse(
        service,
        shared_orthanc,
        "nodule-presence",
        truth.study_instance_uid,
        truth.series_instance_uid,
    )
    assert presence.status_code == 200
    (finding,) = presence.json()["findings"]
    assert finding["qualitative_evaluations"][0]["value"]["meaning"] == "Absent"
    assert finding["probability"] < 0.1


def test_presence_classifier_reports_probability(
    service: InferenceProcess, shared_orthanc: OrthancServer, three_lesions: Phantom
) -> None:
    truth = three_lesions.truth
    response = analyse(
        service,
        shared_orthanc,
        "nodule-presence",
        truth.study_instance_uid,
        truth.series_instance_uid,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    sr = retrieve(
        shared_orthanc,
        truth.study_instance_uid,
        derive_result_uids(
            truth.study_instance_uid,
            truth.series_instance_uid,
            service_model_uid(service, "nodule-presence"),
            "1.0.0",
        ).sr_series_instance_uid,
        body["sr_sop_instance_uid"],
    )
    (finding,) = read_findings(sr).findings
    assert finding.probability is not None and finding.probability > 0.9
    assert finding.qualitative_evaluations[0].value.meaning == "Present"


def test_compressed_series_is_decoded(
    service: InferenceProcess, shared_orthanc: OrthancServer
) -> None:
    phantom = generate_phantom(
        PhantomSpec(seed=33, rows=128, columns=128, slices=40, lesion_diameters_mm=(10.0,))
    )
    datasets = phantoms.renamed_series(list(phantom.instances()), "j2k")
    for ds in datasets:
        ds.compress(JPEG2000Lossless)
    store(shared_orthanc, datasets)
    response = analyse(
        service,
        shared_orthanc,
        "nodule-detector",
        phantom.truth.study_instance_uid,
        datasets[0].SeriesInstanceUID,
    )
    assert response.status_code == 200, response.text
    (lesion,) = response.json()["lesions"]
    assert lesion["diameter_mm"] == pytest.approx(10.0, rel=0.10)
    assert math.dist(lesion["centroid_mm"], phantom.truth.lesions[0].center_mm) < 1.0


BAD_SERIES = {
    "mixed orientation": (phantoms.mixed_orientation, 422, "mixed orientation"),
    "gap": (phantoms.with_gap, 422, "missing slice"),
    "not CT": (phantoms.not_ct, 422, "needs a CT series; this series is MR"),
    "no pixel data": (phantoms.without_pixel_data, 422, "no Pixel Data"),
    "unsupported transfer syntax": (phantoms.unsupported_syntax, 422, "cannot decode pixel data"),
}


@pytest.mark.parametrize("case", list(BAD_SERIES))
def test_bad_series_is_a_permanent_4xx_and_the_service_stays_up(
    service: InferenceProcess, shared_orthanc: OrthancServer, case: str
) -> None:
    make, status, reason = BAD_SERIES[case]
    phantom = phantoms.small_phantom(seed=40 + list(BAD_SERIES).index(case))
    datasets = make(phantom)
    store(shared_orthanc, datasets)
    response = analyse(
        service,
        shared_orthanc,
        "nodule-detector",
        phantom.truth.study_instance_uid,
        datasets[0].SeriesInstanceUID,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["kind"] == "permanent"
    assert reason in error["message"]
    assert service.alive()
    assert httpx.get(f"{service.url}/v2/health/ready").status_code == 200


def _post_raw(service: InferenceProcess, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{service.url}/v1/analyses",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def test_bad_requests_are_permanent_4xx(
    service: InferenceProcess, shared_orthanc: OrthancServer, three_lesions: Phantom
) -> None:
    truth = three_lesions.truth
    unknown = analyse(
        service,
        shared_orthanc,
        "no-such-model",
        truth.study_instance_uid,
        truth.series_instance_uid,
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "kind": "permanent",
        "message": "unknown model 'no-such-model'",
    }

    malformed = _post_raw(service, b'{"model": "nodule-detector", ')
    assert malformed.status_code == 400
    assert malformed.json()["error"]["kind"] == "permanent"
    assert "not valid JSON" in malformed.json()["error"]["message"]

    missing = _post_raw(service, b'{"model": "nodule-detector", "study_instance_uid": "1.2"}')
    assert missing.status_code == 400
    message = missing.json()["error"]["message"]
    assert "series_instance_uid: Field required" in message and "source: Field required" in message

    bad_uid = analyse(
        service, shared_orthanc, "nodule-detector", "1.02.x", truth.series_instance_uid
    )
    assert bad_uid.status_code == 400 and "study_instance_uid" in bad_uid.json()["error"]["message"]

    absent = analyse(
        service, shared_orthanc, "nodule-detector", truth.study_instance_uid, "1.2.3.4"
    )
    assert absent.status_code in (404, 422)
    assert absent.json()["error"]["kind"] == "permanent"
    assert service.alive()


def test_unreachable_source_or_destination_is_transient(
    service: InferenceProcess, shared_orthanc: OrthancServer, three_lesions: Phantom
) -> None:
    truth = three_lesions.truth
    nowhere = {"url": f"http://127.0.0.1:{free_port()}/dicom-web"}
    for role in ("source", "destination"):
        response = analyse(
            service,
            shared_orthanc,
            "nodule-presence",
            truth.study_instance_uid,
            truth.series_instance_uid,
            **{role: nowhere},
        )
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["kind"] == "transient"
        assert f"{role} {nowhere['url']} unreachable" in error["message"]


def test_a_users_own_model_drops_into_the_repository(
    tmp_path: Path, models_dir: Path, shared_orthanc: OrthancServer, three_lesions: Phantom
) -> None:
    repository = tmp_path / "repository"
    write_user_model(repository)
    process = InferenceProcess(tmp_path / "svc", repository).start()
    try:
        truth = three_lesions.truth
        metadata = httpx.get(f"{process.url}/v2/models/mean-density").json()
        assert metadata["inputs"] == [
            {"name": "image", "datatype": "FP32", "shape": [1, 16, 32, 32, 1]}
        ]
        response = analyse(
            process,
            shared_orthanc,
            "mean-density",
            truth.study_instance_uid,
            truth.series_instance_uid,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        classified, scalar = body["findings"]
        # Mostly air and lung: the windowed mean is low, so "high density" is improbable.
        (mean,) = scalar["measurements"]
        assert 0.0 < mean["value"] < 0.5
        expected = 1.0 / (1.0 + math.exp(-16.0 * (mean["value"] - 0.5)))
        assert classified["probability"] == pytest.approx(expected, abs=1e-4)
        # The decided class's own concept, from the manifest.
        (evaluation,) = classified["qualitative_evaluations"]
        assert evaluation["value"] == {
            "value": "L",
            "scheme_designator": "99TEST",
            "meaning": "Low density",
        }
        assert evaluation["name"]["meaning"] == "Presence of property"
        sr = retrieve(
            shared_orthanc,
            truth.study_instance_uid,
            derive_result_uids(
                truth.study_instance_uid, truth.series_instance_uid, "2.25.987654321", "0.3.0"
            ).sr_series_instance_uid,
            body["sr_sop_instance_uid"],
        )
        stored = read_findings(sr)
        assert stored.algorithm is not None and stored.algorithm.version == "0.3.0"
        assert [f.tracking_identifier for f in stored.findings] == [
            "Dense lung classification",
            "Mean windowed value",
        ]
    finally:
        process.stop()


def test_request_id_follows_the_analysis_into_the_log(
    service: InferenceProcess, shared_orthanc: OrthancServer, three_lesions: Phantom
) -> None:
    truth = three_lesions.truth
    body = {
        "model": "nodule-presence",
        "study_instance_uid": truth.study_instance_uid,
        "series_instance_uid": truth.series_instance_uid,
        "source": {"url": shared_orthanc.dicomweb_url},
        "destination": {"url": shared_orthanc.dicomweb_url},
    }
    response = httpx.post(
        f"{service.url}/v1/analyses", json=body, headers={"X-Request-ID": "job-4242"}, timeout=60
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "job-4242"
    lines = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
    done = [line for line in lines if line.get("event") == "analysis_done"]
    assert any(line.get("request_id") == "job-4242" for line in done)
