"""Findings of TID 1500 Measurement Report SRs (PS3.16 A.3), read with :mod:`sr_writer`.

Every SR that reaches the site counts, not only ours: a radiologist's OHIF measurement or
another vendor's AI report is read by the same reader. An SR that is not TID 1500 (a free-text
report, a key object selection) is indexed as a series only.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from pydicom.dataset import Dataset

from gateway.index.keys import Pseudonymizer
from gateway.index.presence import ABSENT, presence_of
from gateway.index.records import (
    FindingRecord,
    MeasurementRecord,
    ReportRecord,
    StudyRecord,
    code_key,
)
from gateway.index.units import canonical
from sr_writer import CodedConcept, Findings, NotMeasurementReportError, read_findings
from sr_writer.clinical import (
    ClinicalValue,
    NumericValue,
    is_clinical_report,
    read_clinical_values,
)

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


def is_structured_report(dataset: Dataset) -> bool:
    sop_class = str(dataset.get("SOPClassUID", ""))
    return sop_class in SR_STORAGE_CLASSES and "ContentSequence" in dataset


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


def report_record(dataset: Dataset, study: StudyRecord, keys: Pseudonymizer) -> ReportRecord | None:
    """The findings of ``dataset``, or None when it is not a readable TID 1500 report."""
    if is_clinical_report(dataset):
        return clinical_report_record(dataset, study, keys)
    try:
        findings = read_findings(dataset)
    except NotMeasurementReportError:
        return None
    except ValueError as error:
        # A malformed third-party SR must not fail the intake of the instance itself.
        log.warning("index.sr_unreadable", reason=str(error))
        return None
    return ReportRecord(
        report_key=keys.report(str(dataset.SOPInstanceUID)),
        study_key=study.study_key,
        patient_key=study.patient_key,
        findings=finding_records(findings),
    )


def clinical_report_record(
    dataset: Dataset, study: StudyRecord, keys: Pseudonymizer
) -> ReportRecord | None:
    """A clinical-information report (``sr_writer.clinical``: a table row or a study's
    clinical variables) as one finding row without a finding type: its numbers as
    measurements (canonical UCUM units) and its categories as qualitative values, so that the
    cohort language's ``measurement`` and qualitative filters work on them unchanged."""
    try:
        values = read_clinical_values(dataset)
    except ValueError as error:
        log.warning("index.clinical_report_unreadable", reason=str(error))
        return None
    return ReportRecord(
        report_key=keys.report(str(dataset.SOPInstanceUID)),
        study_key=study.study_key,
        patient_key=study.patient_key,
        findings=[clinical_finding_record(values)],
    )


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
