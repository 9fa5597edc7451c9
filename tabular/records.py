"""The rows the findings index keeps of a report: one per finding, in canonical units.

A TID 1500 Measurement Report (PS3.16 A.3) read with :func:`sr_writer.read_findings`, or a
clinical-information report (:mod:`sr_writer.clinical`), becomes a list of
:class:`FindingRecord`: type, site, qualitative values and measurements as ``SCHEME:CODE``
strings and canonical UCUM units (:mod:`tabular.units`), and whether the finding is present or
absent (:mod:`tabular.presence`). The site's index stores these rows; the inference service
builds the same rows from the reports it fetches, and a plan's features are computed from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pydicom.dataset import Dataset

from sr_writer import CodedConcept, Findings, NotMeasurementReportError, read_findings
from sr_writer.clinical import (
    ClinicalValue,
    NumericValue,
    is_clinical_report,
    read_clinical_values,
)
from tabular.presence import ABSENT, PRESENT, Presence, presence_of
from tabular.units import canonical

__all__ = [
    "PROBABILITY_CONCEPT",
    "SR_STORAGE_CLASSES",
    "FindingRecord",
    "MeasurementRecord",
    "clinical_finding_record",
    "code_key",
    "finding_records",
    "report_findings",
]

log = structlog.get_logger(__name__)

#: Structured Reporting Storage SOP Classes (PS3.4 B.5) that can carry TID 1500.
SR_STORAGE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
        "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
    }
)


#: Probability (DCM 122157), which sr_writer models as a field of its own: indexed as a
#: measurement in UCUM "1", so cohorts can filter on it like on any other number.
PROBABILITY_CONCEPT = "DCM:122157"


def code_key(scheme: str, value: str) -> str:
    """A coded concept as the index stores it: ``SCHEME:CODE`` (e.g. ``SCT:27925004``)."""
    return f"{scheme.strip()}:{value.strip()}"


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
    #: ``absent``: the group says its finding type is not there (:mod:`tabular.presence`).
    presence: Presence = PRESENT


def _code(concept: CodedConcept) -> str:
    return code_key(concept.scheme_designator, concept.value)


def finding_records(findings: Findings) -> list[FindingRecord]:
    """The index's rows for one report's findings (measurements in canonical units), each
    present or absent; a report without a finding is one absent row without a type: its
    algorithm (when the report names it) looked and found nothing."""
    algorithm = findings.algorithm
    if not findings.findings:
        return [
            FindingRecord(
                finding_type=None,
                algorithm_name=algorithm.name if algorithm else None,
                algorithm_version=algorithm.version if algorithm else None,
                presence=ABSENT,
            )
        ]
    records = []
    for finding in findings.findings:
        measurements = []
        for measurement in finding.measurements:
            value, unit = canonical(measurement.value, measurement.unit.value)
            measurements.append(MeasurementRecord(_code(measurement.name), value, unit))
        if finding.probability is not None:
            measurements.append(MeasurementRecord(PROBABILITY_CONCEPT, finding.probability, "1"))
        finding_type = _code(finding.finding_type) if finding.finding_type else None
        qualitative = tuple(
            (_code(q.name), _code(q.value)) for q in finding.qualitative_evaluations
        )
        records.append(
            FindingRecord(
                finding_type=finding_type,
                finding_site=_code(finding.finding_site) if finding.finding_site else None,
                qualitative=qualitative,
                measurements=tuple(measurements),
                algorithm_name=algorithm.name if algorithm else None,
                algorithm_version=algorithm.version if algorithm else None,
                presence=presence_of(finding_type, qualitative),
            )
        )
    return records


def clinical_finding_record(values: Sequence[ClinicalValue]) -> FindingRecord:
    """Clinical values as the index's one finding row without a finding type: numbers as
    measurements (canonical UCUM units), categories as qualitative values."""
    measurements = []
    qualitative = []
    for value in values:
        concept = code_key(value.concept.scheme_designator, value.concept.value)
        if isinstance(value, NumericValue):
            number, unit = canonical(value.value, value.unit.value)
            measurements.append(MeasurementRecord(concept, number, unit))
        else:
            qualitative.append(
                (concept, code_key(value.value.scheme_designator, value.value.value))
            )
    return FindingRecord(
        finding_type=None,
        finding_site=None,
        qualitative=tuple(qualitative),
        measurements=tuple(measurements),
        algorithm_name=None,
        algorithm_version=None,
    )


def report_findings(dataset: Dataset) -> list[FindingRecord] | None:
    """The rows of an SR: a clinical-information report's one row of values, or a TID 1500
    report's findings; None when it is neither (a free-text report, a key object selection)
    or cannot be read (a malformed third-party SR is logged and skipped, never an error)."""
    if is_clinical_report(dataset):
        try:
            return [clinical_finding_record(read_clinical_values(dataset))]
        except ValueError as error:
            log.warning("records.clinical_report_unreadable", reason=str(error))
            return None
    try:
        return finding_records(read_findings(dataset))
    except NotMeasurementReportError:
        return None
    except ValueError as error:
        log.warning("records.sr_unreadable", reason=str(error))
        return None
