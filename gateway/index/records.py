"""What the index keeps of an instance and of a finding: cohort attributes, never identifiers."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.index.presence import PRESENT, Presence


def code_key(scheme: str, value: str) -> str:
    """A coded concept as the index stores it: ``SCHEME:CODE`` (e.g. ``SCT:27925004``)."""
    return f"{scheme.strip()}:{value.strip()}"


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


@dataclass(frozen=True)
class MeasurementRecord:
    concept: str  # SCHEME:CODE
    value: float
    unit: str  # UCUM


@dataclass(frozen=True)
class FindingRecord:
    """One finding of a TID 1500 SR: its type, site, qualitative values and measurements;
    or, absent and without a type, a report whose algorithm found nothing."""

    finding_type: str | None  # SCHEME:CODE; None for a group without a Finding item (OHIF)
    finding_site: str | None = None
    qualitative: tuple[tuple[str, str], ...] = ()  # (concept, value), both SCHEME:CODE
    measurements: tuple[MeasurementRecord, ...] = ()
    algorithm_name: str | None = None
    algorithm_version: str | None = None
    #: ``absent``: the group says its finding type is not there (:mod:`gateway.index.presence`).
    presence: Presence = PRESENT


@dataclass
class ReportRecord:
    """The findings of one SR, to replace whatever the index held for that SR before."""

    report_key: int
    study_key: int
    patient_key: int
    findings: list[FindingRecord] = field(default_factory=list)
