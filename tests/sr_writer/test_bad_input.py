"""Bad input (issue 3): each a clear ValueError subclass naming the field, before any DICOM.

"Before any DICOM is built" is checked by counting highdicom's SR constructor calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from fedgate.phantom import Phantom
from sr_writer import (
    EmptyMaskError,
    Findings,
    GraphicOutsideImageError,
    ImageRegion,
    MissingValueError,
    NonFiniteValueError,
    NotMeasurementReportError,
    ReferenceNotInEvidenceError,
    SegmentDescription,
    SegmentRegion,
    ValueTooLongError,
    VolumeRegion,
    build_seg,
    build_sr,
    codes,
    read_findings,
)
from sr_writer.clinical import ClinicalInformationReport, NumericValue
from tests.sr_writer.builders import ALGORITHM, lesion_findings


@pytest.fixture
def sr_constructions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts Comprehensive3DSR constructions (to assert none happened)."""
    calls: list[int] = []
    original = hd.sr.Comprehensive3DSR.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(hd.sr.Comprehensive3DSR, "__init__", counting)
    yield calls


def findings_json(phantom: Phantom, datasets: list[Dataset]) -> dict[str, Any]:
    """The findings as JSON (what a model's post-processing would hand over)."""
    return lesion_findings(phantom, datasets).model_dump(mode="json")


def test_image_not_in_evidence(
    lesion_phantom: Phantom, header_only: list[Dataset], sr_constructions: list[int]
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    region = findings.findings[0].region
    assert isinstance(region, ImageRegion)
    stray = region.model_copy(update={"sop_instance_uid": "1.2.3.999"})
    bad = findings.model_copy(
        update={"findings": (findings.findings[0].model_copy(update={"region": stray}),)}
    )
    with pytest.raises(ReferenceNotInEvidenceError) as raised:
        build_sr(bad, header_only)
    assert raised.value.field == "findings.0.region.sop_instance_uid"
    assert "1.2.3.999" in str(raised.value)
    assert sr_constructions == []


def test_evidence_dataset_missing(
    lesion_phantom: Phantom, header_only: list[Dataset], sr_constructions: list[int]
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    with pytest.raises(ReferenceNotInEvidenceError) as raised:
        build_sr(findings, header_only[1:])
    assert raised.value.field == "evidence.instances.0"
    assert sr_constructions == []


def test_measurement_without_unit(lesion_phantom: Phantom, header_only: list[Dataset]) -> None:
    data = findings_json(lesion_phantom, header_only)
    del data["findings"][1]["measurements"][0]["unit"]
    with pytest.raises(MissingValueError) as raised:
        Findings.parse(data)
    assert raised.value.field == "findings.1.measurements.0.unit"
    assert isinstance(raised.value, ValueError)


def test_unit_outside_ucum(lesion_phantom: Phantom, header_only: list[Dataset]) -> None:
    data = findings_json(lesion_phantom, header_only)
    data["findings"][0]["measurements"][0]["unit"]["scheme_designator"] = "SCT"
    with pytest.raises(ValueError, match=r"findings\.0\.measurements\.0.*UCUM"):
        Findings.parse(data)


def test_graphic_outside_the_image(
    lesion_phantom: Phantom, header_only: list[Dataset], sr_constructions: list[int]
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    region = findings.findings[1].region
    assert isinstance(region, ImageRegion)
    (column, row), _ = region.points
    outside = region.model_copy(update={"points": ((column, row), (column + 200.0, row))})
    bad = findings.model_copy(
        update={
            "findings": (
                findings.findings[0],
                findings.findings[1].model_copy(update={"region": outside}),
            )
        }
    )
    with pytest.raises(GraphicOutsideImageError) as raised:
        build_sr(bad, header_only)
    assert raised.value.field.startswith("findings.1.region.points")
    assert "128x128" in str(raised.value)
    assert sr_constructions == []


def test_point_outside_the_image(lesion_phantom: Phantom, header_only: list[Dataset]) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    point = ImageRegion(
        graphic_type="POINT",
        points=((-1.0, 5.0),),
        sop_instance_uid=str(header_only[0].SOPInstanceUID),
    )
    bad = findings.model_copy(
        update={"findings": (findings.findings[0].model_copy(update={"region": point}),)}
    )
    with pytest.raises(GraphicOutsideImageError, match=r"findings\.0\.region\.points\.0"):
        build_sr(bad, header_only)


def test_empty_mask(header_only: list[Dataset]) -> None:
    segment = SegmentDescription(
        number=1,
        label="Nodule",
        category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        type=codes.NODULE,
    )
    mask = np.zeros((len(header_only), 128, 128), dtype=bool)
    with pytest.raises(EmptyMaskError) as raised:
        build_seg(mask, header_only, [segment], ALGORITHM)
    assert raised.value.field == "mask"


def test_empty_segment_of_two(header_only: list[Dataset]) -> None:
    segments = [
        SegmentDescription(
            number=n,
            label=f"Nodule {n}",
            category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            type=codes.NODULE,
        )
        for n in (1, 2)
    ]
    mask = np.zeros((len(header_only), 128, 128, 2), dtype=bool)
    mask[3, 10:20, 10:20, 0] = True
    with pytest.raises(EmptyMaskError) as raised:
        build_seg(mask, header_only, segments, ALGORITHM)
    assert raised.value.field == "segments.1"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_measurements(
    value: float, lesion_phantom: Phantom, header_only: list[Dataset]
) -> None:
    data = findings_json(lesion_phantom, header_only)
    data["findings"][0]["measurements"][0]["value"] = value
    with pytest.raises(NonFiniteValueError) as raised:
        Findings.parse(data)
    assert raised.value.field == "findings.0.measurements.0.value"


def test_nan_coordinate(lesion_phantom: Phantom, header_only: list[Dataset]) -> None:
    data = findings_json(lesion_phantom, header_only)
    data["findings"][0]["region"]["points"][0][1] = math.nan
    with pytest.raises(NonFiniteValueError) as raised:
        Findings.parse(data)
    assert raised.value.field == "findings.0.region.image.points.0.1"


def test_nan_in_fractional_mask(header_only: list[Dataset]) -> None:
    segment = SegmentDescription(
        number=1,
        label="Nodule",
        category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        type=codes.NODULE,
    )
    mask = np.zeros((len(header_only), 128, 128), dtype=np.float32)
    mask[2, 5, 5] = np.nan
    with pytest.raises(NonFiniteValueError, match="mask"):
        build_seg(mask, header_only, [segment], ALGORITHM, segmentation_type="FRACTIONAL")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("findings", 0, "tracking_identifier"), "N" * 65),
        (("findings", 0, "finding_type", "meaning"), "M" * 65),
        (("algorithm", "name"), "A" * 65),
        (("algorithm", "version"), "1." * 40),
    ],
)
def test_over_long_text(
    path: tuple[str | int, ...], value: str, lesion_phantom: Phantom, header_only: list[Dataset]
) -> None:
    data = findings_json(lesion_phantom, header_only)
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ValueTooLongError) as raised:
        Findings.parse(data)
    assert raised.value.field == ".".join(str(p) for p in path)
    assert "64" in str(raised.value)


def test_non_tid1500_sr_is_refused_clearly(header_only: list[Dataset]) -> None:
    """A Comprehensive SR with another root template (e.g. a basic text report)."""
    report = hd.sr.ContainerContentItem(
        name=pydicom.sr.codedict.codes.DCM.Findings, template_id="2000"
    )
    report.ContentSequence = [
        hd.sr.TextContentItem(
            name=pydicom.sr.codedict.codes.DCM.Finding,
            value="No nodule.",
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    ]
    sr = hd.sr.ComprehensiveSR(
        evidence=header_only[:1],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    with pytest.raises(NotMeasurementReportError, match="not a TID 1500"):
        read_findings(sr)


def test_an_image_is_not_a_report(phantom_datasets: list[Dataset]) -> None:
    with pytest.raises(NotMeasurementReportError, match="not a structured report"):
        read_findings(phantom_datasets[0])


def test_volume_region_in_a_frame_of_reference_not_in_the_evidence(
    lesion_phantom: Phantom, header_only: list[Dataset], sr_constructions: list[int]
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    elsewhere = VolumeRegion(
        graphic_type="POINT", points=((0.0, 0.0, 0.0),), frame_of_reference_uid="1.2.3.4.5"
    )
    bad = findings.model_copy(
        update={"findings": (findings.findings[0].model_copy(update={"region": elsewhere}),)}
    )
    with pytest.raises(ReferenceNotInEvidenceError) as raised:
        build_sr(bad, header_only)
    assert raised.value.field == "findings.0.region.frame_of_reference_uid"
    assert sr_constructions == []


def test_segment_of_a_seg_not_in_the_evidence(
    lesion_phantom: Phantom, header_only: list[Dataset]
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    segment = SegmentRegion(sop_instance_uid="1.2.3.4.6", segment_number=1)
    bad = findings.model_copy(
        update={"findings": (findings.findings[0].model_copy(update={"region": segment}),)}
    )
    with pytest.raises(ReferenceNotInEvidenceError, match="segmentation is not in the evidence"):
        build_sr(bad, header_only)


def test_a_clinical_information_report_is_not_read_as_findings() -> None:
    """sr_writer.clinical's reports are TID 1500 too, but hold clinical values, not findings:
    an index must not count a patient's LVEF as an imaging finding."""
    report = ClinicalInformationReport(
        [NumericValue(Code("10230-1", "LN", "LVEF"), 35.0, Code("%", "UCUM", "percent"))],
        patient_id="P1",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        sop_instance_uid="1.2.3.4.5",
        tracking_uid="1.2.3.4.6",
        device_observer_uid="1.2.3.4.7",
    )
    with pytest.raises(NotMeasurementReportError, match="clinical-information report"):
        read_findings(report)
