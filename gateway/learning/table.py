"""A site's training table: the plan's features and label, one row per patient (or study).

Built at the site from its own findings index and never sent anywhere: the ClientApp trains on
it and returns model parameters and aggregate metrics only.

What each feature is (the plan's ``source``) is :mod:`tabular.extraction`'s definition, which the
inference service shares: this module reads the rows it needs from the site's findings index
(the cohort's studies, their findings, the patients' clinical values) and computes every
feature with it.

Missing values, then, are handled as the plan says: ``drop`` leaves the row out; ``impute_mean``
puts the site's mean of the training rows (never of the held-out rows) in its place. A row
without a label is always left out. The held-out split is drawn per unit from its (salted,
site-local) key and the plan's seed, so one site always splits the same way for one plan.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.federated.query import membership_sql
from gateway.index import FindingsIndex
from gateway.learning.plan import (
    ClinicalFeature,
    Label,
    MeasurementFeature,
    PresenceFeature,
    TrainingPlan,
)
from tabular.extraction import Dated, Reporters, StudyFacts, clinical_value, feature_value
from tabular.records import FindingRecord, MeasurementRecord

__all__ = ["SiteTable", "site_table"]


@dataclass(frozen=True)
class SiteTable:
    """Features (float64, one column per plan feature, in the plan's order) and the binary
    label (0/1), split into the training rows and the held-out rows of the plan's evaluation.
    Missing values have been handled as the plan says (rows dropped, or the site's mean)."""

    feature_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    #: Rows of the cohort left out: no label, or (``missing: drop``) a feature missing.
    rows_dropped: int

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def site_table(index: FindingsIndex, plan: TrainingPlan) -> SiteTable:
    """The plan's table at this site (see :mod:`tabular.extraction` for each feature)."""
    units = _units(index, plan)
    unit_keys = sorted(units)
    clinical = _clinical_rows(index, plan)
    reporters = _reporters(index, plan)
    x = np.array(
        [
            [
                feature_value(
                    feature, units[k].studies, clinical.get(units[k].patient_key, []), reporters
                )
                for feature in plan.features
            ]
            for k in unit_keys
        ],
        dtype=np.float64,
    ).reshape(len(unit_keys), len(plan.features))
    y = np.array(
        [clinical_value(plan.label, clinical.get(units[k].patient_key, [])) for k in unit_keys],
        dtype=np.float64,
    )
    held_out = np.array([_held_out(key, plan) for key in unit_keys], dtype=bool)

    labelled = ~np.isnan(y)
    keep = labelled & ~np.isnan(x).any(axis=1) if plan.missing == "drop" else labelled
    train, test = keep & ~held_out, keep & held_out
    x_train, x_test = x[train], x[test]
    if plan.missing == "impute_mean":
        x_train, x_test = _impute_with_training_means(x_train, x_test)
    return SiteTable(
        feature_names=plan.feature_names,
        x_train=x_train,
        y_train=y[train].astype(np.int8),
        x_test=x_test,
        y_test=y[test].astype(np.int8),
        rows_dropped=int(len(unit_keys) - keep.sum()),
    )


@dataclass(frozen=True)
class _Unit:
    """A row's unit: its patient and its cohort studies (one for a study-level unit)."""

    patient_key: int
    studies: list[StudyFacts]


def _units(index: FindingsIndex, plan: TrainingPlan) -> dict[int, _Unit]:
    """unit key -> the unit, each study with the rows of its findings of the plan's types."""
    sql = membership_sql(plan.cohort, "studies", ["s.study_date", "s.age_years", "s.patient_sex"])
    findings = _finding_rows(index, plan)
    units: dict[int, _Unit] = {}
    for study, patient, date, age, sex in index.database.query(sql.text, sql.params):
        facts = StudyFacts(
            int(study), int(date or 0), age, sex, tuple(findings.get(int(study), ()))
        )
        key = int(patient) if plan.unit == "patient" else int(study)
        units.setdefault(key, _Unit(int(patient), [])).studies.append(facts)
    return units


def _finding_types(plan: TrainingPlan) -> list[str]:
    return sorted(
        {
            f.finding_type
            for f in plan.features
            if isinstance(f, MeasurementFeature | PresenceFeature)
        }
    )


def _placeholders(values: list[Any]) -> str:
    return ", ".join("?" for _ in values)


def _finding_rows(index: FindingsIndex, plan: TrainingPlan) -> dict[int, list[FindingRecord]]:
    """Per study, the finding rows the plan's measurement and presence features read: those of
    the plan's finding types and the "found nothing" rows, in the index's order."""
    types = _finding_types(plan)
    if not types:
        return {}
    concepts = sorted(
        {f.concept for f in plan.features if isinstance(f, MeasurementFeature) and f.concept}
    )
    measured: dict[int, list[MeasurementRecord]] = defaultdict(list)
    if concepts:
        for finding, concept, value, unit in index.database.query(
            "SELECT m.finding_key, m.concept, m.value, m.unit FROM measurements m "
            "JOIN findings f ON f.finding_key = m.finding_key "
            f"WHERE f.finding_type IN ({_placeholders(types)}) "
            f"AND m.concept IN ({_placeholders(concepts)}) ORDER BY m.finding_key",
            [*types, *concepts],
        ):
            measured[int(finding)].append(MeasurementRecord(concept, float(value), unit))
    rows: dict[int, list[FindingRecord]] = defaultdict(list)
    for finding, study, finding_type, presence, algorithm in index.database.query(
        "SELECT f.finding_key, f.study_key, f.finding_type, f.presence, f.algorithm_name "
        f"FROM findings f WHERE f.finding_type IN ({_placeholders(types)}) "
        "OR (f.finding_type IS NULL AND f.presence = 'absent') ORDER BY f.finding_key",
        types,
    ):
        rows[int(study)].append(
            FindingRecord(
                finding_type=finding_type,
                measurements=tuple(measured.get(int(finding), ())),
                algorithm_name=algorithm,
                presence=presence,
            )
        )
    return rows


def _reporters(index: FindingsIndex, plan: TrainingPlan) -> Reporters:
    """Which algorithms report each of the plan's finding types anywhere in the index."""
    types = _finding_types(plan)
    reporting: dict[str, set[str]] = defaultdict(set)
    if types:
        for finding_type, algorithm in index.database.query(
            "SELECT DISTINCT finding_type, algorithm_name FROM findings "
            f"WHERE finding_type IN ({_placeholders(types)}) AND algorithm_name IS NOT NULL",
            types,
        ):
            reporting[finding_type].add(algorithm)
    return lambda finding_type: reporting.get(finding_type, set())


def _clinical_rows(index: FindingsIndex, plan: TrainingPlan) -> dict[int, list[Dated]]:
    """Per patient, the rows without a finding type (clinical-information reports) holding the
    plan's clinical variables and label, with their study's date, in the index's order."""
    variables: list[ClinicalFeature | Label] = [
        f for f in plan.features if isinstance(f, ClinicalFeature)
    ]
    variables.append(plan.label)
    coded = sorted({v.concept for v in variables if v.equals is not None})
    numeric = sorted({v.concept for v in variables if v.equals is None})
    found: dict[int, tuple[int, int, list[tuple[str, str]], list[MeasurementRecord]]] = {}

    def row(finding: Any, patient: Any, date: Any) -> tuple[Any, ...]:
        key = int(finding)
        if key not in found:
            found[key] = (int(patient), int(date or 0), [], [])
        return found[key]

    clinical_join = (
        "JOIN findings f ON f.finding_key = {alias}.finding_key "
        "JOIN studies s ON s.study_key = f.study_key WHERE f.finding_type IS NULL "
    )
    if coded:
        for finding, patient, date, concept, value in index.database.query(
            "SELECT f.finding_key, f.patient_key, s.study_date, q.concept, q.value "
            "FROM qualitative q "
            + clinical_join.format(alias="q")
            + f"AND q.concept IN ({_placeholders(coded)})",
            coded,
        ):
            row(finding, patient, date)[2].append((concept, value))
    if numeric:
        for finding, patient, date, concept, value, unit in index.database.query(
            "SELECT f.finding_key, f.patient_key, s.study_date, m.concept, m.value, m.unit "
            "FROM measurements m "
            + clinical_join.format(alias="m")
            + f"AND m.concept IN ({_placeholders(numeric)})",
            numeric,
        ):
            row(finding, patient, date)[3].append(MeasurementRecord(concept, float(value), unit))
    by_patient: dict[int, list[Dated]] = defaultdict(list)
    for key in sorted(found):
        patient, date, qualitative, measurements = found[key]
        record = FindingRecord(
            finding_type=None, qualitative=tuple(qualitative), measurements=tuple(measurements)
        )
        by_patient[patient].append(Dated(date, record))
    return by_patient


def _held_out(unit_key: int, plan: TrainingPlan) -> bool:
    digest = hashlib.sha256(f"{plan.evaluation.seed}:{unit_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < plan.evaluation.holdout


def _impute_with_training_means(
    x_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    known = ~np.isnan(x_train)
    counts = known.sum(axis=0)
    sums = np.where(known, x_train, 0.0).sum(axis=0)
    # A column without any value at this site is imputed with 0 (nanmean would warn and NaN).
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return (
        np.where(np.isnan(x_train), means, x_train),
        np.where(np.isnan(x_test), means, x_test),
    )
