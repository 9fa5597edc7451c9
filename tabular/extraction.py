"""A feature's value for one unit (a patient or a study), from the unit's rows.

The one definition of what each feature of a plan (:mod:`tabular.features`) is, used by the
site's training table (``gateway.learning.table``, rows from its findings index) and by the
inference service for a new study (``inference_service.tabular``, rows from the study's
reports): a model trained across sites gets at inference the inputs it was trained on.

- ``age``, ``sex``: from the unit's latest study that has them (a study-level unit has one).
- ``measurement``: the values of present findings of the type (of the feature's algorithm, if
  it names one) in the unit's studies, reduced (``max``, ``sum``, ``mean``, ``count``). Where
  the studies hold no such finding but a report says there is none (an absent row of the
  type, or a "found nothing" row of an algorithm that reports the type: the cohort language's
  ``absent``), ``max``, ``sum`` and ``count`` are 0: "no nodule" is a largest diameter of 0,
  not an unknown. Where nothing was reported, the value is missing.
- ``presence``: 1 present, 0 absent (as above), missing when nothing was reported.
- ``clinical`` (and the label): the patient's latest value by study date, from any of the
  patient's studies (a clinical-information SR is often a study of its own); among values of
  one date the one given last wins.

Missing is NaN; what to do about it (drop the row, impute a mean) is the caller's plan.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass

from tabular.features import (
    AgeFeature,
    ClinicalFeature,
    Feature,
    Label,
    MeasurementFeature,
    PresenceFeature,
    SexFeature,
)
from tabular.presence import ABSENT, PRESENT
from tabular.records import FindingRecord
from tabular.units import canonical

__all__ = ["MISSING", "Dated", "Reporters", "StudyFacts", "clinical_value", "feature_value"]

MISSING = float("nan")

#: The algorithms that report findings of a type (by name): a "found nothing" report of one of
#: them says the type is absent. The site knows them from its whole index; the inference
#: service from the reports it read and the models it serves.
Reporters = Callable[[str], Collection[str]]


@dataclass(frozen=True)
class StudyFacts:
    """One of the unit's studies: its demographics and the rows of its reports."""

    key: Hashable
    date: int  # YYYYMMDD, 0 when unknown
    age: int | None
    sex: str | None
    findings: tuple[FindingRecord, ...] = ()


@dataclass(frozen=True)
class Dated:
    """A row of a clinical-information report (no finding type) and its study's date."""

    date: int  # YYYYMMDD, 0 when unknown
    finding: FindingRecord


def feature_value(
    feature: Feature,
    studies: Sequence[StudyFacts],
    clinical: Sequence[Dated],
    reporters: Reporters,
) -> float:
    """``feature``'s value for a unit whose studies are ``studies`` and whose patient's
    clinical rows are ``clinical`` (oldest first), or :data:`MISSING`."""
    latest_first = sorted(studies, key=lambda s: (s.date, s.key), reverse=True)
    if isinstance(feature, AgeFeature):
        age = next((s.age for s in latest_first if s.age is not None), None)
        return MISSING if age is None else float(age)
    if isinstance(feature, SexFeature):
        sex = next((s.sex for s in latest_first if s.sex is not None), None)
        return {"M": 1.0, "F": 0.0}.get(sex or "", MISSING)
    if isinstance(feature, MeasurementFeature | PresenceFeature):
        rows = [row for study in studies for row in study.findings]
        return _finding_value(feature, rows, reporters)
    return clinical_value(feature, clinical)


def _finding_value(
    feature: MeasurementFeature | PresenceFeature,
    rows: Iterable[FindingRecord],
    reporters: Reporters,
) -> float:
    found: list[float] = []
    said_absent = False
    for row in rows:
        if feature.algorithm is not None and row.algorithm_name != feature.algorithm:
            continue
        if row.finding_type == feature.finding_type and row.presence == PRESENT:
            found += _values(feature, row)
        elif row.presence == ABSENT and (
            row.finding_type == feature.finding_type
            or (
                row.finding_type is None
                and row.algorithm_name is not None
                and row.algorithm_name in reporters(feature.finding_type)
            )
        ):
            said_absent = True
    if isinstance(feature, PresenceFeature):
        return 1.0 if found else 0.0 if said_absent else MISSING
    if not found:
        return 0.0 if said_absent and feature.reduce != "mean" else MISSING
    if feature.reduce == "count":
        return float(len(found))
    if feature.reduce == "sum":
        return float(sum(found))
    if feature.reduce == "mean":
        return float(sum(found) / len(found))
    return float(max(found))


def _values(feature: MeasurementFeature | PresenceFeature, row: FindingRecord) -> list[float]:
    """A present finding's contribution: its measurements of the concept in the feature's unit,
    or (counted, or seen at all) one 1.0."""
    if isinstance(feature, MeasurementFeature) and feature.reduce != "count":
        assert feature.concept is not None and feature.unit is not None
        factor, canonical_unit = canonical(1.0, feature.unit)
        return [
            m.value / factor
            for m in row.measurements
            if m.concept == feature.concept and m.unit == canonical_unit
        ]
    return [1.0]


def clinical_value(variable: ClinicalFeature | Label, clinical: Sequence[Dated]) -> float:
    """The patient's latest value of a clinical variable (or the label) as a number: numeric in
    the plan's unit, coded as 1 (``equals``) or 0, a numeric label as 1 at or above
    ``at_least``; :data:`MISSING` when the patient has none."""
    latest: float = MISSING
    latest_date = -1
    for dated in clinical:
        row = dated.finding
        if row.finding_type is not None or dated.date < latest_date:
            continue
        value = _clinical(variable, row)
        if value is not None:
            latest, latest_date = value, dated.date
    return latest


def _clinical(variable: ClinicalFeature | Label, row: FindingRecord) -> float | None:
    if variable.equals is not None:
        values = [value for concept, value in row.qualitative if concept == variable.concept]
        return (1.0 if values[-1] == variable.equals else 0.0) if values else None
    assert variable.unit is not None
    factor, canonical_unit = canonical(1.0, variable.unit)
    numbers = [
        m.value / factor
        for m in row.measurements
        if m.concept == variable.concept and m.unit == canonical_unit
    ]
    if not numbers:
        return None
    if isinstance(variable, Label):
        return 1.0 if numbers[-1] >= (variable.at_least or 0.0) else 0.0
    return numbers[-1]
