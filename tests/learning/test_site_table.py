"""A site's training table, built from its own findings index, equals the phantom's truth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedgate.phantom_cohort import CODES, TRUE_MODEL, generate_cohort, write_cohort_to_index
from gateway.index import (
    FindingRecord,
    FindingsIndex,
    IndexSettings,
    ReportRecord,
    SeriesRecord,
    StudyRecord,
)
from gateway.learning.table import SiteTable, site_table
from tests.learning.cohorts import PLAN, expected_row, plan


@pytest.fixture
def index(tmp_path: Path) -> Iterator[FindingsIndex]:
    opened = FindingsIndex.open(IndexSettings(), tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def _all_rows(table: SiteTable) -> tuple[np.ndarray, np.ndarray]:
    return np.vstack([table.x_train, table.x_test]), np.concatenate([table.y_train, table.y_test])


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def test_every_feature_and_the_label_equal_the_truth(index: FindingsIndex) -> None:
    patients = generate_cohort(site=1, patients=300)
    write_cohort_to_index(index, patients)
    table = site_table(index, plan().plan)

    x, y = _all_rows(table)
    expected = np.array([[*expected_row(p), float(p.lung_cancer)] for p in patients])
    np.testing.assert_allclose(_sorted(np.column_stack([x, y])), _sorted(expected), atol=1e-9)
    assert table.rows_dropped == 0
    assert table.feature_names == plan().plan.feature_names
    # Patients without a nodule are rows with a largest diameter of 0 (the detector looked).
    assert (x[:, 4] == 0).sum() == sum(1 for p in patients if not p.nodule_diameters_mm) > 0


def test_the_held_out_split_is_stable_and_near_the_plan_fraction(index: FindingsIndex) -> None:
    write_cohort_to_index(index, generate_cohort(site=2, patients=400))
    first, second = site_table(index, plan().plan), site_table(index, plan().plan)
    np.testing.assert_array_equal(first.x_test, second.x_test)
    assert 0.18 < first.n_test / (first.n_train + first.n_test) < 0.32
    reseeded = site_table(index, plan(PLAN.replace("seed: 7", "seed: 8")).plan)
    assert not np.array_equal(_sorted(reseeded.x_test), _sorted(first.x_test))


def test_units_are_converted_to_the_plans(index: FindingsIndex) -> None:
    patients = generate_cohort(site=1, patients=50)
    write_cohort_to_index(index, patients)
    in_cm = plan(PLAN.replace("unit: mm, reduce: max", "unit: cm, reduce: max")).plan
    x, _ = _all_rows(site_table(index, in_cm))
    expected = sorted(p.largest_nodule_mm / 10 for p in patients)
    np.testing.assert_allclose(sorted(x[:, 4]), expected)


def test_a_cohort_filter_selects_the_rows(index: FindingsIndex) -> None:
    patients = generate_cohort(site=3, patients=200)
    write_cohort_to_index(index, patients)
    women = plan(PLAN.replace("ModalitiesInStudy: CT}", "ModalitiesInStudy: CT, PatientSex: F}"))
    x, _ = _all_rows(site_table(index, women.plan))
    assert len(x) == sum(1 for p in patients if p.sex == "F")
    assert set(x[:, 1]) == {0.0}


def test_count_presence_and_study_rows(index: FindingsIndex) -> None:
    patients = generate_cohort(site=1, patients=120)
    write_cohort_to_index(index, patients)
    text = PLAN.replace("unit: patient", "unit: study").replace(
        "  - {name: qtc, source: clinical",
        '  - {name: nodules, source: measurement, finding_type: "SCT:27925004", reduce: count}\n'
        '  - {name: any_nodule, source: presence, finding_type: "SCT:27925004"}\n'
        "  - {name: qtc, source: clinical",
    )
    x, _ = _all_rows(site_table(index, plan(text).plan))
    # One CT study per patient is in the cohort (the ECG study is not a CT study).
    assert len(x) == len(patients)
    assert sorted(x[:, 5]) == sorted(float(len(p.nodule_diameters_mm)) for p in patients)
    assert sorted(x[:, 6]) == sorted(float(bool(p.nodule_diameters_mm)) for p in patients)


def _unread_ct(index: FindingsIndex, name: str, label: FindingRecord | None = None) -> None:
    """A patient with a CT study that no detector has read, no LVEF, and maybe a label."""
    keys = index.keys
    patient, study = keys.patient(name), keys.study(f"{name}/ct")
    reports = (
        [ReportRecord(keys.report(f"{name}/clinical"), study, patient, [label])] if label else []
    )
    index.write(
        [StudyRecord(study, patient, "M", 70, 20240101)],
        [SeriesRecord(keys.series(f"{name}/ct"), study, patient, "CT", "CHEST", None, None)],
        reports,
    )


def test_missing_values_are_dropped_or_imputed_as_the_plan_says(index: FindingsIndex) -> None:
    patients = generate_cohort(site=1, patients=100)
    write_cohort_to_index(index, patients)
    # A labelled patient whose nodules nobody reported and whose LVEF is unknown.
    label = FindingRecord(
        finding_type=None, qualitative=((CODES["diagnosis"], CODES["lung_cancer"]),)
    )
    _unread_ct(index, "NO-LVEF", label)
    dropped = site_table(index, plan().plan)
    assert dropped.rows_dropped == 1
    assert dropped.n_train + dropped.n_test == len(patients)

    imputed = site_table(index, plan(PLAN.replace("missing: drop", "missing: impute_mean")).plan)
    assert imputed.rows_dropped == 0
    x, y = _all_rows(imputed)
    assert len(x) == len(patients) + 1 and not np.isnan(x).any()
    training_lvef_mean = dropped.x_train[:, 3].mean()
    # The new row (age 70, male, labelled 1) got the training rows' mean LVEF and diameter.
    new = [
        i for i in range(len(x)) if x[i, 0] == 70 and x[i, 3] == pytest.approx(training_lvef_mean)
    ]
    assert len(new) == 1 and y[new[0]] == 1


def test_a_row_without_label_is_left_out(index: FindingsIndex) -> None:
    patients = generate_cohort(site=1, patients=30)
    write_cohort_to_index(index, patients)
    _unread_ct(index, "NO-LABEL")
    table = site_table(index, plan(PLAN.replace("missing: drop", "missing: impute_mean")).plan)
    assert table.rows_dropped == 1
    assert table.n_train + table.n_test == len(patients)


def test_pooled_sites_recover_the_generating_model(tmp_path: Path) -> None:
    """What learning is measured against: the three sites' pooled rows, fitted centrally,
    give the generating model's coefficients back (to sampling error)."""
    xs, ys = [], []
    for site in (1, 2, 3):
        index = FindingsIndex.open(IndexSettings(), tmp_path / f"site-{site}")
        try:
            write_cohort_to_index(index, generate_cohort(site, 2000))
            x, y = _all_rows(site_table(index, plan().plan))
        finally:
            index.close()
        xs.append(x)
        ys.append(y)
    fitted = LogisticRegression(C=np.inf, max_iter=10_000).fit(np.vstack(xs), np.concatenate(ys))
    names = plan().plan.feature_names
    for name, coefficient in zip(names, fitted.coef_[0], strict=True):
        truth = TRUE_MODEL[name]
        assert abs(coefficient - truth) < 0.35 * abs(truth) + 0.005, (name, coefficient, truth)
