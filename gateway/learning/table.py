"""A site's training table: the plan's features and label, one row per patient (or study).

Built at the site from its own findings index and never sent anywhere: the ClientApp trains on
it and returns model parameters and aggregate metrics only.

What each feature is (the plan's ``source``; :mod:`gateway.learning.plan`):

- ``age``, ``sex``: from the unit's study (per patient: the latest study of the cohort).
- ``measurement``: the values of present findings of the type in the unit's cohort studies,
  reduced (``max``, ``sum``, ``mean``, ``count``). Where the studies hold no such finding but a
  report says there is none (an absent row, or an algorithm that reports the type found
  nothing; the cohort language's ``absent``), ``max``, ``sum`` and ``count`` are 0: "no nodule"
  is a largest diameter of 0, not an unknown. Where nothing was reported, the value is missing.
- ``presence``: 1 present, 0 absent (as above), missing when nothing was reported.
- ``clinical`` (and the label): the patient's latest value by study date, from any of the
  patient's studies (a clinical-information SR is often a study of its own), so a study-level
  row takes its patient's clinical values too.

Missing values, then, are handled as the plan says: ``drop`` leaves the row out; ``impute_mean``
puts the site's mean of the training rows (never of the held-out rows) in its place. A row
without a label is always left out. The held-out split is drawn per unit from its (salted,
site-local) key and the plan's seed, so one site always splits the same way for one plan.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.federated.cohort import FindingFilter
from gateway.federated.query import finding_predicate, membership_sql
from gateway.index import FindingsIndex
from gateway.index.units import canonical
from gateway.learning.plan import (
    AgeFeature,
    ClinicalFeature,
    Feature,
    Label,
    MeasurementFeature,
    PresenceFeature,
    SexFeature,
    TrainingPlan,
)

__all__ = ["SiteTable", "site_table"]

MISSING = float("nan")


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


@dataclass(frozen=True)
class _CohortStudy:
    study_key: int
    patient_key: int
    date: int
    age: int | None
    sex: str | None


def site_table(index: FindingsIndex, plan: TrainingPlan) -> SiteTable:
    """The plan's table at this site (see the module's description of each feature)."""
    studies = _cohort_studies(index, plan)
    units = _units(studies, plan.unit)
    unit_keys = sorted(units)
    columns = [_column(index, feature, units, unit_keys) for feature in plan.features]
    label = _clinical_values(index, plan.label, [units[k][0].patient_key for k in unit_keys])
    x = np.column_stack(columns) if unit_keys else np.empty((0, len(columns)))
    y = np.asarray(label, dtype=np.float64)
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


def _cohort_studies(index: FindingsIndex, plan: TrainingPlan) -> list[_CohortStudy]:
    sql = membership_sql(plan.cohort, "studies", ["s.study_date", "s.age_years", "s.patient_sex"])
    return [
        _CohortStudy(int(study), int(patient), int(date or 0), age, sex)
        for study, patient, date, age, sex in index.database.query(sql.text, sql.params)
    ]


#: unit key -> the unit's cohort studies, latest first.
Units = dict[int, list[_CohortStudy]]


def _units(studies: list[_CohortStudy], unit: str) -> Units:
    units: Units = defaultdict(list)
    for study in studies:
        units[study.patient_key if unit == "patient" else study.study_key].append(study)
    for members in units.values():
        members.sort(key=lambda s: (s.date, s.study_key), reverse=True)
    return dict(units)


def _column(index: FindingsIndex, feature: Feature, units: Units, keys: list[int]) -> np.ndarray:
    if isinstance(feature, AgeFeature):
        values = [_latest(units[k], lambda s: s.age) for k in keys]
    elif isinstance(feature, SexFeature):
        sexes = [_latest(units[k], lambda s: s.sex) for k in keys]
        values = [{"M": 1.0, "F": 0.0}.get(sex or "", MISSING) for sex in sexes]
    elif isinstance(feature, MeasurementFeature | PresenceFeature):
        values = _finding_column(index, feature, units, keys)
    else:
        values = _clinical_values(index, feature, [units[k][0].patient_key for k in keys])
    return np.asarray([MISSING if v is None else float(v) for v in values], dtype=np.float64)


def _latest(studies: list[_CohortStudy], attribute: Callable[[_CohortStudy], Any]) -> Any:
    """The attribute of the latest study that has it."""
    return next((v for v in map(attribute, studies) if v is not None), None)


def _finding_column(
    index: FindingsIndex,
    feature: MeasurementFeature | PresenceFeature,
    units: Units,
    keys: list[int],
) -> list[float]:
    present = FindingFilter(type=feature.finding_type, algorithm=feature.algorithm)
    absent = FindingFilter(
        type=feature.finding_type, presence="absent", algorithm=feature.algorithm
    )
    reported_absent = {row[0] for row in _finding_rows(index, absent, "f.study_key")}
    if isinstance(feature, MeasurementFeature) and feature.reduce != "count":
        assert feature.concept is not None and feature.unit is not None
        factor, canonical_unit = canonical(1.0, feature.unit)
        predicate = finding_predicate(present, "f")
        rows = index.database.query(
            "SELECT m.study_key, m.value FROM measurements m "
            "JOIN findings f ON f.finding_key = m.finding_key "
            f"WHERE m.concept = ? AND m.unit = ? AND {predicate.text}",
            [feature.concept, canonical_unit, *predicate.params],
        )
        values = _by_study((int(study), float(value) / factor) for study, value in rows)
    else:
        # One 1.0 per present finding: counted, or (presence) seen at all.
        rows = _finding_rows(index, present, "f.study_key, f.finding_key")
        values = _by_study((int(study), 1.0) for study, _ in rows)

    column: list[float] = []
    for key in keys:
        found = [v for study in units[key] for v in values.get(study.study_key, ())]
        said_absent = any(study.study_key in reported_absent for study in units[key])
        column.append(_reduce(feature, found, said_absent))
    return column


def _reduce(
    feature: MeasurementFeature | PresenceFeature, found: list[float], absent: bool
) -> float:
    if isinstance(feature, PresenceFeature):
        return 1.0 if found else 0.0 if absent else MISSING
    if not found:
        return 0.0 if absent and feature.reduce != "mean" else MISSING
    if feature.reduce == "count":
        return float(len(found))
    if feature.reduce == "sum":
        return float(sum(found))
    if feature.reduce == "mean":
        return float(sum(found) / len(found))
    return float(max(found))


def _finding_rows(index: FindingsIndex, finding: FindingFilter, columns: str) -> list[Any]:
    predicate = finding_predicate(finding, "f")
    return index.database.query(
        f"SELECT {columns} FROM findings f WHERE {predicate.text}", predicate.params
    )


def _by_study(rows: Iterable[tuple[int, float]]) -> dict[int, list[float]]:
    grouped: dict[int, list[float]] = defaultdict(list)
    for study, value in rows:
        grouped[study].append(value)
    return grouped


def _clinical_values(
    index: FindingsIndex, variable: ClinicalFeature | Label, patients: list[int]
) -> list[float]:
    """Per patient (in order), the latest value of a clinical variable, as a number: numeric
    in the plan's unit, coded as 1 (``equals``) or 0, numeric labels as 1 at or above
    ``at_least``; missing where the patient has none."""
    if variable.equals is not None:
        rows = index.database.query(
            "SELECT f.patient_key, s.study_date, f.finding_key, q.value FROM qualitative q "
            "JOIN findings f ON f.finding_key = q.finding_key "
            "JOIN studies s ON s.study_key = f.study_key "
            "WHERE f.finding_type IS NULL AND q.concept = ?",
            [variable.concept],
        )
        equals = variable.equals
        latest = _latest_per_patient(rows, lambda value: 1.0 if value == equals else 0.0)
    else:
        assert variable.unit is not None
        factor, canonical_unit = canonical(1.0, variable.unit)
        rows = index.database.query(
            "SELECT f.patient_key, s.study_date, f.finding_key, m.value FROM measurements m "
            "JOIN findings f ON f.finding_key = m.finding_key "
            "JOIN studies s ON s.study_key = f.study_key "
            "WHERE f.finding_type IS NULL AND m.concept = ? AND m.unit = ?",
            [variable.concept, canonical_unit],
        )
        latest = _latest_per_patient(rows, lambda value: float(value) / factor)
        if isinstance(variable, Label):
            threshold = variable.at_least
            latest = {p: 1.0 if v >= (threshold or 0.0) else 0.0 for p, v in latest.items()}
    return [latest.get(patient, MISSING) for patient in patients]


def _latest_per_patient(rows: list[Any], value_of: Callable[[Any], float]) -> dict[int, float]:
    ordered = sorted(rows, key=lambda row: (int(row[0]), int(row[1] or 0), int(row[2])))
    # Later rows of a patient overwrite earlier ones: the latest study's value is kept.
    return {int(patient): value_of(value) for patient, _, _, value in ordered}


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
