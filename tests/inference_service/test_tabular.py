"""A tabular manifest (what ``fedgate learn run`` exports) and the missing-value rules of its
plan, without processes (the end-to-end test is tests/learning/test_serving.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from hub.learning.export import write_model
from inference_service.errors import PermanentError
from inference_service.manifest import ManifestError, parse_manifest
from inference_service.repository import load_model
from inference_service.settings import InferenceSettings
from inference_service.tabular import TabularInputs, model_row
from tests.learning.cohorts import PLAN, plan

NAMES = ("age", "male", "current_smoker", "lvef", "nodule_diameter", "qtc")
MEANS = [60.0, 0.5, 0.3, 58.0, 4.0, 420.0]


def _exported(tmp_path: Path, text: str = PLAN) -> Path:
    parameters = [np.linspace(-1, 1, 6), np.array([0.1])]
    return write_model(tmp_path, plan(text), parameters, MEANS, [1.0] * 6)


def test_the_exported_entry_loads_as_a_tabular_model(tmp_path: Path) -> None:
    folder = _exported(tmp_path)
    model = load_model(folder, InferenceSettings(models_dir=tmp_path))
    tabular = model.manifest.tabular
    assert tabular is not None
    assert tabular.feature_names == NAMES
    assert tabular.means == tuple(MEANS)
    assert (tabular.finding.scheme_designator, tabular.finding.value) == ("SCT", "363358000")
    assert model.manifest.plan_sha256 == plan().sha256


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["tabular"].update(missing="impute_mean", means=None), "means"),
        (lambda d: d["tabular"].update(means=[1.0]), "tabular: .*means: 1 values for 6"),
        (lambda d: d.update(outputs=[{"kind": "scalar", "name": "x"}]), "outputs"),
        (lambda d: d["tabular"]["features"][0].update(source="height"), "tabular.features.0"),
    ],
)
def test_a_broken_tabular_manifest_names_the_field(tmp_path: Path, change, field: str) -> None:
    data = yaml.safe_load((_exported(tmp_path) / "model.yaml").read_text())
    change(data)
    with pytest.raises(ManifestError, match=f"lung-cancer: .*{field}"):
        parse_manifest(data, "lung-cancer")


def _inputs(values: list[float]) -> TabularInputs:
    return TabularInputs(NAMES, tuple(values), ())


def test_a_plan_that_drops_rows_refuses_a_study_naming_the_absent_features(
    tmp_path: Path,
) -> None:
    spec = load_model(_exported(tmp_path), InferenceSettings(models_dir=tmp_path)).manifest
    assert spec.tabular is not None
    nan = float("nan")
    with pytest.raises(
        PermanentError, match=r"features lvef, qtc absent for study 1\.2\.3"
    ) as caught:
        model_row(spec.tabular, _inputs([70, 1, 0, nan, 0, nan]), "lung-cancer", "1.2.3")
    assert caught.value.status_code == 422
    row = model_row(spec.tabular, _inputs([70, 1, 0, 55, 0, 400]), "lung-cancer", "1.2.3")
    np.testing.assert_array_equal(row, [[70, 1, 0, 55, 0, 400]])


def test_a_plan_that_imputes_puts_the_training_mean_in_place(tmp_path: Path) -> None:
    text = PLAN.replace("missing: drop", "missing: impute_mean")
    spec = load_model(_exported(tmp_path, text), InferenceSettings(models_dir=tmp_path)).manifest
    assert spec.tabular is not None and spec.tabular.missing == "impute_mean"
    nan = float("nan")
    row = model_row(spec.tabular, _inputs([70, 1, 0, nan, 0, nan]), "lung-cancer", "1.2.3")
    np.testing.assert_array_equal(row, [[70, 1, 0, MEANS[3], 0, MEANS[5]]])
