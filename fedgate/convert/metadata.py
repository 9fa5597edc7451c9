"""Clinical table rows -> clinical-information SR documents (``fedgate convert metadata``).

Each row becomes one :class:`sr_writer.clinical.ClinicalInformationReport` for its patient
(PatientID) and, when the row names one, its imaging study (StudyInstanceUID). A row is
converted whole or not at all: a row with a value in an unknown column, a number in the wrong
unit, a cell that is not a number or not one of the mapped categories, or no usable PatientID is
skipped and reported with its line, and every other row is still converted. Empty cells are
missing values, which clinical tables have, and are simply left out of the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

from fedgate.convert.identity import (
    CLINICAL_SERIES_NUMBER,
    PatientStudy,
    derived_uid,
    dicom_date,
    patient_sex,
    validate_patient_id,
    validate_uid,
)
from fedgate.convert.mapping import CodedColumn, Mapping, NumericColumn
from fedgate.convert.pacs import PacsDirectory, PatientMismatch
from fedgate.convert.problems import Problem
from fedgate.convert.table import Row, Table
from sr_writer.clinical import ClinicalInformationReport, ClinicalValue, CodedValue, NumericValue

_NUMBER_WITH_UNIT = re.compile(r"^\s*([-+]?(?:\d+[.,]?\d*|[.,]\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")
#: "1,500": a decimal comma (1.5) or a thousands separator (1500)? Refused, not guessed.
_AMBIGUOUS_COMMA = re.compile(r"^[-+]?\d{1,3},\d{3}$")


class RowError(ValueError):
    """Why a row cannot be converted; ``field`` names the column."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ClinicalRecord:
    """One converted row: who and which study, and the values."""

    line: int
    patient_study: PatientStudy
    values: tuple[ClinicalValue, ...]
    #: Whether the row named the study (else the patient's own clinical-information study).
    study_named: bool = False
    #: The series' number in its study (the PACS's free one, when there is a PACS to ask).
    series_number: int = CLINICAL_SERIES_NUMBER

    @property
    def series_instance_uid(self) -> str:
        """One clinical-information series per study."""
        return derived_uid(
            "fedgate.convert.clinical-information.series", self.patient_study.study_instance_uid
        )

    @property
    def sop_instance_uid(self) -> str:
        # Derived from patient, study and content: the same row converted again replaces its
        # report; a row with different values is a different report.
        return derived_uid(
            "fedgate.convert.clinical-information",
            self.patient_study.patient_id,
            self.patient_study.study_instance_uid,
            *sorted(_value_text(value) for value in self.values),
        )


@dataclass(frozen=True)
class MetadataConversion:
    records: list[ClinicalRecord]
    problems: list[Problem]


def convert_table(table: Table, mapping: Mapping) -> MetadataConversion:
    """Check every row against the mapping: the convertible ones, and a problem per skipped one."""
    records: list[ClinicalRecord] = []
    problems: list[Problem] = []
    for row in table.rows:
        try:
            records.append(convert_row(row, mapping))
        except RowError as error:
            problems.append(Problem(table.source, row.line, error.field, error.reason))
    return MetadataConversion(records=records, problems=problems)


def convert_row(row: Row, mapping: Mapping) -> ClinicalRecord:
    """One row to a record, or :class:`RowError` for the first reason it cannot be."""
    if row.stray_cells:
        raise RowError(
            None, f"{len(row.stray_cells)} cell(s) beyond the last column: {row.stray_cells[:3]}"
        )
    for name, cell in row.cells.items():
        if not mapping.is_known(name) and not _is_empty(cell):
            raise RowError(name, "unknown column (not in the mapping, nor in its 'ignore' list)")
    patient_study = _patient_study(row.cells)
    study_named = not _is_empty(row.cells.get("StudyInstanceUID"))
    values: list[ClinicalValue] = []
    for column in mapping.columns.values():
        cell = row.cells.get(column.name)
        if _is_empty(cell):
            continue
        if isinstance(column, NumericColumn):
            values.append(_numeric_value(column, cell))
        else:
            values.append(_coded_value(column, cell))
    if not values:
        raise RowError(None, "no clinical value in this row (all mapped cells are empty)")
    return ClinicalRecord(
        line=row.line,
        patient_study=patient_study,
        values=tuple(values),
        study_named=study_named,
    )


def complete_from_pacs(
    conversion: MetadataConversion, pacs: PacsDirectory, source: str
) -> MetadataConversion:
    """Records with the PACS's patient/study attributes; rows naming another patient's study
    become problems (see :mod:`fedgate.convert.pacs`)."""
    records: list[ClinicalRecord] = []
    problems = list(conversion.problems)
    for record in conversion.records:
        try:
            identity = pacs.complete(record.patient_study, study_named=record.study_named)
        except PatientMismatch as error:
            problems.append(Problem(source, record.line, "StudyInstanceUID", str(error)))
            continue
        completed = dataclasses.replace(record, patient_study=identity)
        number = pacs.series_number(
            identity.study_instance_uid, completed.series_instance_uid, CLINICAL_SERIES_NUMBER
        )
        records.append(dataclasses.replace(completed, series_number=number))
    problems.sort(key=lambda problem: problem.line or 0)
    return MetadataConversion(records=records, problems=problems)


def build_report(
    record: ClinicalRecord, content_datetime: dt.datetime | None = None
) -> ClinicalInformationReport:
    """The SR document of one record, its UIDs derived from patient, study and values."""
    identity = record.patient_study
    sop_instance_uid = record.sop_instance_uid
    return ClinicalInformationReport(
        list(record.values),
        **identity.sop_class_kwargs(),
        series_instance_uid=record.series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        tracking_uid=derived_uid(sop_instance_uid, "tracking"),
        device_observer_uid=derived_uid("fedgate.convert", "device"),
        series_number=record.series_number,
        study_description=identity.study_description,
        content_datetime=content_datetime,
    )


def _patient_study(cells: dict[str, Any]) -> PatientStudy:
    def text(column: str) -> str | None:
        cell = cells.get(column)
        return None if _is_empty(cell) else str(cell).strip()

    patient_id_cell = text("PatientID")
    if patient_id_cell is None:
        raise RowError("PatientID", "missing: every row needs the patient's PatientID")
    try:
        patient_id = validate_patient_id(patient_id_cell)
    except ValueError as error:
        raise RowError("PatientID", str(error)) from None
    study_uid_cell = text("StudyInstanceUID")
    try:
        study_uid = validate_uid(study_uid_cell) if study_uid_cell else None
    except ValueError as error:
        raise RowError("StudyInstanceUID", str(error)) from None
    attributes: dict[str, str | None] = {}
    for column, check in (
        ("PatientSex", patient_sex),
        ("PatientBirthDate", dicom_date),
        ("StudyDate", dicom_date),
    ):
        cell = text(column)
        try:
            attributes[column] = check(cell) if cell else None
        except ValueError as error:
            raise RowError(column, str(error)) from None
    return PatientStudy(
        patient_id=patient_id,
        # Without a study, the values open the patient's own clinical-information study,
        # the same one on every run.
        study_instance_uid=study_uid
        or derived_uid("fedgate.convert.clinical-information.study", patient_id),
        study_description=None if study_uid else "Clinical information",
        patient_name=text("PatientName"),
        patient_sex=attributes["PatientSex"],
        patient_birth_date=attributes["PatientBirthDate"],
        study_date=attributes["StudyDate"],
        accession_number=text("AccessionNumber"),
    )


def _numeric_value(column: NumericColumn, cell: Any) -> NumericValue:
    unit: str | None = None
    if isinstance(cell, dict):  # JSON: {"value": 82.5, "unit": "kg"}
        unit = cell.get("unit")
        cell = cell.get("value")
    if isinstance(cell, bool):
        raise RowError(column.name, f"{cell!r} is not a number")
    if isinstance(cell, int | float):
        number = float(cell)
    else:
        match = _NUMBER_WITH_UNIT.match(str(cell))
        if match is None:
            raise RowError(column.name, f"{str(cell)[:40]!r} is not a number")
        digits = match.group(1)
        if _AMBIGUOUS_COMMA.match(digits):
            raise RowError(
                column.name,
                f"{digits!r}: a decimal comma or a thousands separator? write the number "
                "without a thousands separator (1500) or with a decimal point (1.5)",
            )
        # A decimal comma, as spreadsheets in much of Europe export numbers ("70,5" kg).
        number = float(digits.replace(",", "."))
        unit = match.group(2) or unit
    if unit is not None and unit != column.unit.value:
        raise RowError(
            column.name,
            f"unit {unit!r} is not the mapped unit {column.unit.value!r} (UCUM, case-sensitive)",
        )
    if not math.isfinite(number):
        raise RowError(column.name, f"{cell!r} is not a finite number")
    return NumericValue(concept=column.concept, value=number, unit=column.unit)


def _coded_value(column: CodedColumn, cell: Any) -> CodedValue:
    code = column.lookup(str(cell).strip())
    if code is None:
        allowed = ", ".join(repr(key) for key in column.values)
        raise RowError(
            column.name, f"{str(cell)[:40]!r} is not one of the mapped values ({allowed})"
        )
    return CodedValue(concept=column.concept, value=code)


def _is_empty(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _value_text(value: ClinicalValue) -> str:
    concept = f"{value.concept.scheme_designator}:{value.concept.value}"
    if isinstance(value, NumericValue):
        return f"{concept}={value.value!r}[{value.unit.value}]"
    return f"{concept}={value.value.scheme_designator}:{value.value.value}"
