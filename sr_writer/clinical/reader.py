"""Reader of clinical-information reports: the typed values back out of a dataset.

It walks the content tree with pydicom only (no highdicom object model), so it reads the
documents :mod:`sr_writer.clinical.measurement_report` writes and any other TID 1500 document
whose title is "Clinical Information", whatever SR IOD (Enhanced, Comprehensive, Comprehensive
3D) carries it: the values are the NUM and CODE items that a measurement group (TID 1501)
CONTAINS, and the CODE items of the report's own "Qualitative Evaluations" container.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from sr_writer.clinical.content import (
    CLINICAL_INFORMATION,
    ClinicalValue,
    CodedValue,
    NumericValue,
)

_TID_1500 = "1500"
_IMAGING_MEASUREMENTS = Code("126010", "DCM", "Imaging Measurements")
_MEASUREMENT_GROUP = Code("125007", "DCM", "Measurement Group")
_QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")


class NotAClinicalReport(ValueError):
    """The dataset is not a clinical-information report (see :func:`is_clinical_report`)."""


def is_clinical_report(dataset: Dataset) -> bool:
    """Whether ``dataset`` is a TID 1500 SR document titled "Clinical Information".

    Looks only at the root (title and template), so an index can call it on every SR it sees.
    """
    if dataset.get("Modality") != "SR" or dataset.get("ValueType") != "CONTAINER":
        return False
    title = _concept_name(dataset)
    if title != CLINICAL_INFORMATION:
        return False
    templates = dataset.get("ContentTemplateSequence") or []
    return any(str(item.get("TemplateIdentifier", "")) == _TID_1500 for item in templates)


def read_clinical_values(dataset: Dataset) -> list[ClinicalValue]:
    """The numeric and coded values of a clinical-information report, in document order.

    Raises :class:`NotAClinicalReport` for any other dataset, and :class:`ValueError` naming
    the item for a NUM without a value or unit (a malformed document, not a missing value).
    """
    if not is_clinical_report(dataset):
        raise NotAClinicalReport(
            f"SOP instance {dataset.get('SOPInstanceUID', '?')} is not a TID 1500 report "
            f"titled {CLINICAL_INFORMATION.meaning!r}"
        )
    values: list[ClinicalValue] = []
    for item in _children(dataset, "CONTAINS"):
        name = _concept_name(item)
        if name == _IMAGING_MEASUREMENTS:
            for group in _children(item, "CONTAINS"):
                if _concept_name(group) == _MEASUREMENT_GROUP:
                    values.extend(_group_values(group))
        elif name == _QUALITATIVE_EVALUATIONS:
            values.extend(_group_values(item))
    return values


def _group_values(container: Dataset) -> Iterator[ClinicalValue]:
    for item in _children(container, "CONTAINS"):
        concept = _concept_name(item)
        if concept is None:
            continue
        if item.ValueType == "NUM":
            yield _numeric_value(item, concept)
        elif item.ValueType == "CODE" and item.get("ConceptCodeSequence"):
            yield CodedValue(concept=concept, value=_code(item.ConceptCodeSequence[0]))


def _numeric_value(item: Dataset, concept: Code) -> NumericValue:
    measured = item.get("MeasuredValueSequence") or []
    if not measured:
        raise ValueError(f"NUM item {concept.meaning!r} has no measured value")
    value_item = measured[0]
    units = value_item.get("MeasurementUnitsCodeSequence") or []
    if not units:
        raise ValueError(f"NUM item {concept.meaning!r} has no unit")
    # FloatingPointValue (FD) is exact where present; NumericValue (DS) is at most 16 characters.
    number = value_item.get("FloatingPointValue", value_item.NumericValue)
    return NumericValue(concept=concept, value=float(number), unit=_code(units[0]))


def _children(item: Dataset, relationship: str) -> Iterator[Dataset]:
    for child in item.get("ContentSequence") or []:
        if child.get("RelationshipType") == relationship:
            yield child


def _concept_name(item: Dataset) -> Code | None:
    names = item.get("ConceptNameCodeSequence") or []
    return _code(names[0]) if names else None


def _code(item: Dataset) -> Code:
    # Long code values (over 16 characters) travel in LongCodeValue (PS3.3 8.8).
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    return Code(str(value), str(item.CodingSchemeDesignator), str(item.get("CodeMeaning", "")))
