"""Findings of TID 1500 Measurement Report SRs (PS3.16 A.3) and clinical-information reports,
read with :mod:`sr_writer` into the rows of :mod:`tabular.records`.

Every SR that reaches the site counts, not only ours: a radiologist's OHIF measurement or
another vendor's AI report is read by the same reader. An SR that is not TID 1500 (a free-text
report, a key object selection) is indexed as a series only. The inference service builds the
same rows from the reports it fetches (:func:`tabular.records.report_findings`), so a model
trained on the index sees the same values at inference.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from gateway.index.keys import Pseudonymizer
from gateway.index.records import ReportRecord, StudyRecord
from tabular.records import SR_STORAGE_CLASSES, report_findings


def is_structured_report(dataset: Dataset) -> bool:
    sop_class = str(dataset.get("SOPClassUID", ""))
    return sop_class in SR_STORAGE_CLASSES and "ContentSequence" in dataset


def report_record(dataset: Dataset, study: StudyRecord, keys: Pseudonymizer) -> ReportRecord | None:
    """The findings of ``dataset`` (a TID 1500 or clinical-information report), or None when
    it is neither or cannot be read: a malformed third-party SR must not fail the intake of the
    instance itself."""
    findings = report_findings(dataset)
    if findings is None:
        return None
    return ReportRecord(
        report_key=keys.report(str(dataset.SOPInstanceUID)),
        study_key=study.study_key,
        patient_key=study.patient_key,
        findings=findings,
    )
