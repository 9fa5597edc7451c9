"""What the index keeps of an instance and of a finding: cohort attributes, never identifiers.

A finding's row (:class:`FindingRecord`, :class:`MeasurementRecord`) is :mod:`tabular.records`'s,
which the inference service shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tabular.records import FindingRecord, MeasurementRecord, code_key

__all__ = [
    "FindingRecord",
    "MeasurementRecord",
    "ReportRecord",
    "SeriesRecord",
    "StudyRecord",
    "code_key",
]


@dataclass(frozen=True)
class StudyRecord:
    """A study's cohort attributes (from any of its instances' headers)."""

    study_key: int
    patient_key: int
    patient_sex: str | None
    age_years: int | None
    study_date: int | None  # YYYYMMDD; filtered on, never returned

    @property
    def study_year(self) -> int | None:
        return None if self.study_date is None else self.study_date // 10000

    @property
    def study_month(self) -> int | None:
        return None if self.study_date is None else self.study_date // 100 % 100


@dataclass(frozen=True)
class SeriesRecord:
    series_key: int
    study_key: int
    patient_key: int
    modality: str | None
    body_part: str | None
    manufacturer: str | None
    manufacturer_model: str | None


@dataclass
class ReportRecord:
    """The findings of one SR, to replace whatever the index held for that SR before."""

    report_key: int
    study_key: int
    patient_key: int
    findings: list[FindingRecord] = field(default_factory=list)
