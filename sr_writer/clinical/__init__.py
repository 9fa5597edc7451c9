"""Clinical information (tabular clinical variables) as a DICOM SR document, and back.

One document holds one patient's (or one study's) clinical values, each named by a code and
either numeric with a UCUM unit or coded. The document is a TID 1500 measurement report titled
(LN 55752-0 "Clinical Information"); its layout is in
:mod:`sr_writer.clinical.measurement_report`.

Write::

    report = ClinicalInformationReport(
        [NumericValue(Code("10230-1", "LN", "LVEF"), 35.0, Code("%", "UCUM", "percent"))],
        patient_id="P1", study_instance_uid=..., series_instance_uid=...,
        sop_instance_uid=..., tracking_uid=..., device_observer_uid=...,
    )

Read (what a findings index calls on each SR it learns)::

    if is_clinical_report(dataset):
        for value in read_clinical_values(dataset): ...
"""

from sr_writer.clinical.content import (
    CLINICAL_INFORMATION,
    CLINICAL_REPORT,
    TRACKING_IDENTIFIER,
    ClinicalValue,
    CodedValue,
    NumericValue,
)
from sr_writer.clinical.measurement_report import ClinicalInformationReport
from sr_writer.clinical.reader import NotAClinicalReport, is_clinical_report, read_clinical_values

__all__ = [
    "CLINICAL_INFORMATION",
    "CLINICAL_REPORT",
    "TRACKING_IDENTIFIER",
    "ClinicalInformationReport",
    "ClinicalValue",
    "CodedValue",
    "NotAClinicalReport",
    "NumericValue",
    "is_clinical_report",
    "read_clinical_values",
]
