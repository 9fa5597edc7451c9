"""Any TID 1500 Measurement Report SR -> :class:`sr_writer.Findings` (PS3.16 TID 1500).

It walks the content tree itself (rather than through highdicom's template classes) so that it
tolerates what third-party writers leave out or place differently:

- groups without a Finding (OHIF/dcmjs) read with ``finding_type=None``;
- a group's region may sit at group level (TID 1410, highdicom) or under a measurement as
  INFERRED FROM (dcmjs TID 300 measurements, as OHIF writes them);
- a missing tracking identifier becomes "Measurement group <n>", a missing tracking UID is
  derived from the report and the group's position;
- NUM items without a value (a NumericValueQualifier only) are skipped;
- a report without Current Requested Procedure Evidence cannot say which series its images
  belong to, so it is refused with a clear error.

What does not fit the model (a second region, a Time Point Context, ...) is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from sr_writer.clinical import is_clinical_report
from sr_writer.errors import InvalidValueError, NotMeasurementReportError
from sr_writer.findings import (
    IMAGING_PROCEDURE,
    NO_ABNORMALITY,
    PROBABILITY,
    PROBABILITY_DECIMALS,
    AlgorithmIdentification,
    CodedConcept,
    Evidence,
    Finding,
    Findings,
    ImageRegion,
    Measurement,
    QualitativeEvaluation,
    Region,
    ReportReference,
    SegmentRegion,
    SourceInstance,
    VolumeRegion,
    convert_validation_error,
)
from sr_writer.uids import derive_uid

_Key = tuple[str, str]


def _key(code: Code) -> _Key:
    return (str(code.value), str(code.scheme_designator))


# Concepts the reader looks for (PS3.16 Annex D / SNOMED CT, via pydicom's dictionaries).
IMAGING_MEASUREMENT_REPORT = _key(codes.DCM.ImagingMeasurementReport)
IMAGING_MEASUREMENTS = _key(codes.DCM.ImagingMeasurements)
MEASUREMENT_GROUP = _key(codes.DCM.MeasurementGroup)
PROCEDURE_REPORTED = _key(codes.DCM.ProcedureReported)
TRACKING_IDENTIFIER = _key(codes.DCM.TrackingIdentifier)
TRACKING_UID = _key(codes.DCM.TrackingUniqueIdentifier)
FINDING = _key(codes.DCM.Finding)
FINDING_CATEGORY = _key(codes.SCT.FindingsCategoryType)
FINDING_SITE = _key(codes.SCT.FindingSite)
LATERALITY = _key(codes.SCT.Laterality)
MEASUREMENT_METHOD = _key(codes.SCT.MeasurementMethod)
DERIVATION = _key(codes.DCM.Derivation)
ALGORITHM_NAME = _key(codes.DCM.AlgorithmName)
ALGORITHM_VERSION = _key(codes.DCM.AlgorithmVersion)
ALGORITHM_MANUFACTURER = _key(codes.DCM.AlgorithmManufacturer)
ALGORITHM_PARAMETERS = _key(codes.DCM.AlgorithmParameters)
DEVICE_OBSERVER_UID = _key(codes.DCM.DeviceObserverUID)
REFERENCED_SEGMENT = _key(codes.DCM.ReferencedSegment)
REFERENCED_SEGMENTATION_FRAME = _key(codes.DCM.ReferencedSegmentationFrame)
PROBABILITY_KEY = (PROBABILITY.value, PROBABILITY.scheme_designator)
NO_ABNORMALITY_KEY = (NO_ABNORMALITY.value, NO_ABNORMALITY.scheme_designator)

# Items of a group that are its structure, not qualitative evaluations.
_STRUCTURAL_CODES = {FINDING, FINDING_CATEGORY, FINDING_SITE, MEASUREMENT_METHOD, DERIVATION}

TEMPLATE_ID = "1500"


def read_findings(dataset: Dataset) -> Findings:
    """The findings of a TID 1500 SR (ours or a third party's); optional items may be absent.

    Raises :class:`sr_writer.NotMeasurementReportError` for a dataset that is not an SR with a
    TID 1500 Measurement Report, and :class:`sr_writer.InvalidValueError` (naming the field) for
    a report whose content does not fit the model.
    """
    _require_measurement_report(dataset)
    observer_uid: str | None = None
    procedures: list[CodedConcept] = []
    groups: list[Dataset] = []
    for item in _children(dataset):
        name = _concept_key(item)
        if name == DEVICE_OBSERVER_UID:
            observer_uid = str(item.UID)
        elif name == PROCEDURE_REPORTED and item.get("ValueType") == "CODE":
            procedures.append(_coded(item.ConceptCodeSequence[0]))
        elif name == IMAGING_MEASUREMENTS:
            groups.extend(g for g in _children(item) if _concept_key(g) == MEASUREMENT_GROUP)

    algorithm: AlgorithmIdentification | None = None
    findings: list[Finding] = []
    report_uid = str(dataset.SOPInstanceUID)
    try:
        for index, group in enumerate(groups):
            algorithm = algorithm or _algorithm(group, observer_uid)
            if _is_no_finding(group):
                continue
            findings.append(_finding(group, index, report_uid))
        return Findings(
            algorithm=algorithm,
            evidence=_evidence(dataset),
            findings=tuple(findings),
            procedure_reported=tuple(procedures) or (IMAGING_PROCEDURE,),
            report=_report_reference(dataset),
        )
    except ValidationError as error:
        raise convert_validation_error(error) from None


def _require_measurement_report(dataset: Dataset) -> None:
    if "ContentSequence" not in dataset or dataset.get("ValueType") != "CONTAINER":
        raise NotMeasurementReportError(
            f"SOP Instance {dataset.get('SOPInstanceUID', '?')} is not a structured report "
            "(no root CONTAINER with a Content Sequence)"
        )
    templates = [
        str(t.get("TemplateIdentifier", "")) for t in dataset.get("ContentTemplateSequence", [])
    ]
    title = _concept_key(dataset)
    # Some writers leave the Content Template Sequence out; the title (CID 7021) still says it.
    if TEMPLATE_ID not in templates and title != IMAGING_MEASUREMENT_REPORT:
        found = f"template {templates[0]}" if templates else f"title {title}"
        raise NotMeasurementReportError(
            f"not a TID 1500 Measurement Report ({found}); only TID 1500 SRs hold findings"
        )
    if is_clinical_report(dataset):
        # TID 1500 too, but its measurements are a patient's clinical values, not image findings.
        raise NotMeasurementReportError(
            "a clinical-information report (LN 55752-0), not imaging findings: "
            "read it with sr_writer.clinical.read_clinical_values"
        )


def _children(item: Dataset) -> Iterator[Dataset]:
    yield from item.get("ContentSequence", [])


def _concept_key(item: Dataset) -> _Key | None:
    sequence = item.get("ConceptNameCodeSequence")
    if not sequence:
        return None
    code = sequence[0]
    value = code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue")
    return (str(value), str(code.get("CodingSchemeDesignator", "")))


def _coded(code: Dataset) -> CodedConcept:
    value = code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue")
    return CodedConcept(
        value=str(value),
        scheme_designator=str(code.get("CodingSchemeDesignator", "")),
        meaning=str(code.get("CodeMeaning", ""))[:64] or str(value),
        scheme_version=str(code.CodingSchemeVersion) if code.get("CodingSchemeVersion") else None,
    )


def _text(group: Dataset, key: _Key) -> str | None:
    for item in _children(group):
        if _concept_key(item) == key and item.get("ValueType") in {"TEXT", "UIDREF"}:
            value = item.get("TextValue") if item.ValueType == "TEXT" else item.get("UID")
            return str(value) if value else None
    return None


def _algorithm(group: Dataset, observer_uid: str | None) -> AlgorithmIdentification | None:
    """TID 4019 in the group; the UID is the device observer's (or derived from name/version)."""
    name, version = _text(group, ALGORITHM_NAME), _text(group, ALGORITHM_VERSION)
    if not name or not version:
        return None
    parameters = tuple(
        str(item.TextValue)[:1024]
        for item in _children(group)
        if _concept_key(item) == ALGORITHM_PARAMETERS and item.get("TextValue")
    )
    return AlgorithmIdentification(
        name=name[:64],
        version=version[:64],
        uid=observer_uid or derive_uid("algorithm", name, version),
        manufacturer=(_text(group, ALGORITHM_MANUFACTURER) or "")[:64] or None,
        parameters=parameters,
    )


def _is_no_finding(group: Dataset) -> bool:
    """Our negative-result group: Finding = No abnormality, nothing measured, no region."""
    finding = [i for i in _children(group) if _concept_key(i) == FINDING]
    if not finding or "ConceptCodeSequence" not in finding[0]:
        return False
    value = finding[0].ConceptCodeSequence[0]
    key = (str(value.get("CodeValue")), str(value.get("CodingSchemeDesignator")))
    measured = any(
        i.get("ValueType") in {"NUM", "SCOORD", "SCOORD3D", "IMAGE"} for i in _children(group)
    )
    return key == NO_ABNORMALITY_KEY and not measured


def _finding(group: Dataset, index: int, report_uid: str) -> Finding:
    values: dict[str, Any] = {
        "tracking_identifier": (_text(group, TRACKING_IDENTIFIER) or "")[:64]
        or f"Measurement group {index + 1}",
        "tracking_uid": _text(group, TRACKING_UID) or derive_uid("tracking", report_uid, index),
        "finding_type": None,
    }
    measurements: list[Measurement] = []
    evaluations: list[QualitativeEvaluation] = []
    region: Region | None = None
    for item in _children(group):
        key, value_type = _concept_key(item), item.get("ValueType")
        if value_type == "CODE" and "ConceptCodeSequence" in item and key is not None:
            coded = _coded(item.ConceptCodeSequence[0])
            if key == FINDING:
                values["finding_type"] = coded
            elif key == FINDING_CATEGORY:
                values["finding_category"] = coded
            elif key == FINDING_SITE:
                values["finding_site"] = coded
                values["laterality"] = _child_code(item, LATERALITY)
            elif item.get("RelationshipType") == "CONTAINS" and key not in _STRUCTURAL_CODES:
                evaluations.append(
                    QualitativeEvaluation(name=_coded(item.ConceptNameCodeSequence[0]), value=coded)
                )
        elif value_type == "NUM":
            measurement = _measurement(item)
            if measurement is None:
                continue
            probability = _as_probability(measurement) if key == PROBABILITY_KEY else None
            if probability is not None:
                values["probability"] = probability
            else:
                measurements.append(measurement)
            region = region or _first_region(item)
        elif value_type in {"SCOORD", "SCOORD3D", "IMAGE"}:
            region = region or _region(item)
    values["measurements"] = tuple(measurements)
    values["qualitative_evaluations"] = tuple(evaluations)
    values["region"] = region
    return Finding.model_validate(values)


def _child_code(item: Dataset, key: _Key) -> CodedConcept | None:
    for child in _children(item):
        if _concept_key(child) == key and "ConceptCodeSequence" in child:
            return _coded(child.ConceptCodeSequence[0])
    return None


def _measurement(item: Dataset) -> Measurement | None:
    measured = item.get("MeasuredValueSequence")
    if not measured:
        return None  # a NUM with only a Numeric Value Qualifier: nothing to measure
    value_item = measured[0]
    # FloatingPointValue (FD) is exact; NumericValue (DS) holds at most 16 characters.
    value = value_item.get("FloatingPointValue")
    if value is None:
        value = value_item.NumericValue
    units = value_item.get("MeasurementUnitsCodeSequence")
    if not units:
        raise InvalidValueError("measurements.unit", "a NUM item without Measurement Units")
    return Measurement(
        name=_coded(item.ConceptNameCodeSequence[0]),
        value=float(value),
        unit=_coded(units[0]),
        method=_child_code(item, MEASUREMENT_METHOD),
        derivation=_child_code(item, DERIVATION),
    )


def _as_probability(measurement: Measurement) -> float | None:
    """A Probability NUM as 0..1: ours are in "%", other writers' often in "1"."""
    scale = {"%": 100.0, "1": 1.0}.get(measurement.unit.value)
    if scale is None or measurement.unit.scheme_designator != "UCUM":
        return None
    value = measurement.value / scale
    return round(value, PROBABILITY_DECIMALS) if 0.0 <= value <= 1.0 else None


def _first_region(item: Dataset) -> Region | None:
    """A region under a measurement (INFERRED FROM), as dcmjs writes TID 300."""
    for child in _children(item):
        if child.get("ValueType") in {"SCOORD", "SCOORD3D"}:
            region = _region(child)
            if region is not None:
                return region
    return None


def _region(item: Dataset) -> Region | None:
    value_type = item.get("ValueType")
    if value_type == "SCOORD":
        data = [float(v) for v in item.GraphicData]
        image = next((c for c in _children(item) if c.get("ValueType") == "IMAGE"), None)
        if image is None or "ReferencedSOPSequence" not in image:
            return None
        reference = image.ReferencedSOPSequence[0]
        frames = reference.get("ReferencedFrameNumber")
        frame = None
        if frames is not None and frames != "":
            frame = int(frames[0] if isinstance(frames, MultiValue) else frames)
        return ImageRegion(
            graphic_type=str(item.GraphicType),
            points=tuple(zip(data[0::2], data[1::2], strict=True)),
            sop_instance_uid=str(reference.ReferencedSOPInstanceUID),
            frame_number=frame,
        )
    if value_type == "SCOORD3D":
        data = [float(v) for v in item.GraphicData]
        return VolumeRegion(
            graphic_type=str(item.GraphicType),
            points=tuple(zip(data[0::3], data[1::3], data[2::3], strict=True)),
            frame_of_reference_uid=str(item.ReferencedFrameOfReferenceUID),
        )
    if value_type == "IMAGE" and _concept_key(item) in {
        REFERENCED_SEGMENT,
        REFERENCED_SEGMENTATION_FRAME,
    }:
        reference = item.ReferencedSOPSequence[0]
        segment = reference.get("ReferencedSegmentNumber")
        if segment is None:
            return None
        number = segment[0] if isinstance(segment, MultiValue) else segment
        return SegmentRegion(
            sop_instance_uid=str(reference.ReferencedSOPInstanceUID),
            sop_class_uid=str(reference.ReferencedSOPClassUID),
            segment_number=int(number),
        )
    return None


def _evidence(dataset: Dataset) -> Evidence:
    study_uid = str(dataset.StudyInstanceUID)
    instances: list[SourceInstance] = []
    for study in dataset.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            for reference in series.get("ReferencedSOPSequence", []):
                instances.append(
                    SourceInstance(
                        series_instance_uid=str(series.SeriesInstanceUID),
                        sop_class_uid=str(reference.ReferencedSOPClassUID),
                        sop_instance_uid=str(reference.ReferencedSOPInstanceUID),
                    )
                )
        study_uid = str(study.get("StudyInstanceUID", study_uid))
    if not instances:
        raise InvalidValueError(
            "evidence", "the report lists no Current Requested Procedure Evidence"
        )
    return Evidence(study_instance_uid=study_uid, instances=tuple(dict.fromkeys(instances)))


def _report_reference(dataset: Dataset) -> ReportReference:
    preliminary = dataset.get("PreliminaryFlag")
    return ReportReference(
        sop_instance_uid=str(dataset.SOPInstanceUID),
        series_instance_uid=str(dataset.SeriesInstanceUID),
        completion_flag=str(dataset.get("CompletionFlag", "")),
        verification_flag=str(dataset.get("VerificationFlag", "")),
        preliminary=None if preliminary is None else preliminary == "PRELIMINARY",
        content_date=str(dataset.ContentDate) if dataset.get("ContentDate") else None,
        content_time=str(dataset.ContentTime) if dataset.get("ContentTime") else None,
    )
