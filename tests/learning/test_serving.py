"""A model trained on sites' tables, served by the inference service at a site (issue 16 item 3).

Real processes: the model exported by ``hub.learning.export`` (the ONNX and model.yaml a
federated run writes) from a logistic regression fitted on phantom sites' tables, installed beside
the bundled nodule detector in a real inference service; a real gateway routes a new patient's
CT to the detector and the detector's SR to the model, which computes the patient's features from
the study's reports and writes its prediction as an SR.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from dicomweb_client.api import DICOMwebClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from fedgate.phantom_cohort import CohortPatient, cohort_instances, generate_cohort
from gateway.index import FindingsIndex, IndexSettings
from gateway.learning.table import site_table
from hub.learning.export import fitted_pipeline, write_model
from sr_writer import read_findings
from tests.learning.cohorts import PLAN, phantom_site, plan
from tests.pipeline.conftest import chest_rule, jobs, pipeline_settings, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess

#: The nodule-detector's SR arrives after the CT was analysed: it triggers the model.
RISK_RULE = {
    "name": "lung-cancer-risk",
    "match": {"Modality": "SR", "SeriesDescription": "AI nodule-detector *"},
    "include_non_images": True,
    "models": ["lung-cancer"],
}


@dataclass
class Served:
    gateway: GatewayProcess
    inference: InferenceProcess
    pipeline: Pipeline
    onnx: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serving")
    loaded = plan(PLAN)
    rows = [site_table_of(root / f"site{n}", n) for n in (1, 2)]
    x = np.vstack([r[0] for r in rows])
    y = np.concatenate([r[1] for r in rows])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    fitted = LogisticRegression(max_iter=1000).fit((x - mean) / scale, y)
    parameters = [fitted.coef_[0], fitted.intercept_]
    repository = root / "models"
    shutil.copytree(models_dir, repository)
    folder = write_model(repository, loaded, parameters, mean.tolist(), scale.tolist())
    pipeline = fitted_pipeline(loaded, parameters, mean.tolist(), scale.tolist())
    inference = InferenceProcess(root / "inference", repository).start()
    settings = pipeline_settings(
        inference.url,
        routing=[chest_rule(inference.url), {**RISK_RULE, "inference_url": inference.url}],
    )
    gateway = GatewayProcess(root / "gateway", settings).start()
    try:
        yield Served(gateway, inference, pipeline, folder / "model.onnx")
    finally:
        gateway.stop()
        inference.stop()


def site_table_of(data_dir: Path, site: int) -> tuple[np.ndarray, np.ndarray]:
    phantom_site(data_dir, site, 200)
    index = FindingsIndex.open(IndexSettings(), data_dir)
    try:
        table = site_table(index, plan(PLAN).plan)
    finally:
        index.close()
    return table.x_train, table.y_train


def _new_patients() -> tuple[CohortPatient, CohortPatient, CohortPatient]:
    """Patients of a site the model never saw: one with nodules, one without, and one more with
    nodules whose ECG (the QTc feature) never arrives."""
    cohort = generate_cohort(site=7, patients=40)
    with_nodules = [p for p in cohort if p.nodule_diameters_mm and min(p.nodule_diameters_mm) > 9]
    without = next(p for p in cohort if not p.nodule_diameters_mm)
    return with_nodules[0], without, with_nodules[1]


def _predictions(gateway: GatewayProcess, study_uid: str) -> list[dict[str, Any]]:
    found = jobs(gateway, study=study_uid)
    done = [j for j in found if j["model"] == "lung-cancer" and j["state"] != "pending"]
    return done if done and all(j["state"] in ("succeeded", "failed", "dead") for j in done) else []


def _site_row(gateway: GatewayProcess, patient: CohortPatient) -> np.ndarray:
    """The patient's row as every site's training table builds it, from the gateway's own
    findings index: the row whose truth-known features (all but the measured diameter) are the
    patient's."""
    index = FindingsIndex.open(IndexSettings(), gateway.data_dir)
    try:
        table = site_table(index, plan(PLAN).plan)
    finally:
        index.close()
    rows = np.vstack([table.x_train, table.x_test])
    known = [0, 1, 2, 3, 5]  # age, male, current_smoker, lvef, qtc
    truth = np.array(
        [
            patient.age,
            1.0 if patient.sex == "M" else 0.0,
            1.0 if patient.smoking == "current_smoker" else 0.0,
            patient.lvef,
            patient.qtc,
        ]
    )
    (match,) = [row for row in rows if np.allclose(row[known], truth)]
    return match


def test_the_trained_model_predicts_for_a_new_study_and_its_sr_reads_back(
    served: Served,
) -> None:
    gateway = served.gateway
    client = DICOMwebClient(gateway.dicomweb_url)
    nodules, no_nodule, without_ecg = _new_patients()
    for patient in (nodules, no_nodule):
        client.store_instances(list(cohort_instances(patient)))
    instances = list(cohort_instances(without_ecg))
    # The CT and its clinical SR; the ECG study (and its QTc) never arrives.
    client.store_instances(
        [ds for ds in instances if ds.StudyInstanceUID == instances[0].StudyInstanceUID]
    )
    session = onnxruntime.InferenceSession(str(served.onnx))

    for patient in (nodules, no_nodule):
        study_uid = str(next(cohort_instances(patient)).StudyInstanceUID)
        (job,) = wait_until(lambda u=study_uid: _predictions(gateway, u), 120, "the prediction")
        assert job["state"] == "succeeded", job
        assert job["rule"] == "lung-cancer-risk"
        row = _site_row(gateway, patient)
        if not patient.nodule_diameters_mm:
            assert row[4] == 0.0  # "no nodule" is a largest diameter of 0, as at the sites
        expected_sklearn = served.pipeline.predict_proba(row[None, :])[0, 1]
        expected_onnx = session.run(["probabilities"], {"features": row[None, :]})[0][0, 1]

        srs = client.search_for_series(study_uid, search_filters={"Modality": "SR"})
        (series,) = [
            s for s in srs if s.get("0008103E", {}).get("Value", [""])[0].startswith("AI lung")
        ]
        series_uid = series["0020000E"]["Value"][0]
        (sr,) = client.retrieve_series(study_uid, series_uid)
        (finding,) = read_findings(sr).findings
        assert finding.finding_type is not None
        assert finding.finding_type.value == "363358000"  # the label's outcome
        assert finding.probability is not None
        assert abs(finding.probability - expected_sklearn) < 1e-6
        assert abs(finding.probability - expected_onnx) < 1e-6
        (evaluation,) = finding.qualitative_evaluations
        decided = "Present" if expected_sklearn >= 0.5 else "Absent"
        assert evaluation.value.meaning == decided
        # ... and the findings index read it too: a cohort can count the predictions.
        index = FindingsIndex.open(IndexSettings(), gateway.data_dir)
        try:
            probabilities = index.database.query(
                "SELECT m.value FROM measurements m JOIN findings f "
                "ON f.finding_key = m.finding_key WHERE f.finding_type = ? "
                "AND m.concept = ?",
                ["SCT:363358000", "DCM:122157"],
            )
        finally:
            index.close()
        assert any(abs(value - finding.probability) < 1e-9 for (value,) in probabilities)

    study_uid = str(instances[0].StudyInstanceUID)
    (job,) = wait_until(lambda: _predictions(gateway, study_uid), 120, "the refusal")
    assert job["state"] in ("failed", "dead"), job
    assert "feature qtc absent" in str(job), job
