"""read_findings: lossless round trip (property test) and third-party TID 1500 SRs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pydicom_codes

from fedgate.phantom import Phantom
from sr_writer import (
    AlgorithmIdentification,
    CodedConcept,
    Evidence,
    Finding,
    Findings,
    ImageRegion,
    Measurement,
    QualitativeEvaluation,
    SegmentDescription,
    SegmentRegion,
    VolumeRegion,
    build_seg,
    build_sr,
    codes,
    derive_uid,
    read_findings,
)
from tests.sr_writer.builders import ALGORITHM, lesion_findings
from tests.sr_writer.dicomtools import assert_conformant, dsrdump
from tests.sr_writer.npm import DCMJS, NODE_PREFIX, REPO_ROOT, ensure_node_packages
from tests.support.requirements import require_executable

# --- strategies -------------------------------------------------------------------------------

# LO/SH text: printable, no backslash (the value delimiter), no padding spaces at the ends.
text_alphabet = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\")
texts = st.text(text_alphabet, min_size=1, max_size=64).map(str.strip).filter(bool)
concepts = st.one_of(
    st.sampled_from(
        [
            codes.NODULE,
            codes.LESION,
            codes.LUNG,
            codes.DIAMETER,
            codes.VOLUME,
            codes.PRESENT,
            codes.ABSENT,
            codes.LEFT,
            codes.RIGHT,
            codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        ]
    ),
    st.builds(
        CodedConcept,
        value=st.from_regex(r"[A-Z0-9]{1,16}", fullmatch=True),
        scheme_designator=st.just("99FEDGATE"),  # a model manifest's own scheme
        meaning=texts,
    ),
)
units = st.sampled_from([codes.MILLIMETER, codes.CUBIC_MILLIMETER, codes.ucum("[hnsf'U]", "HU")])
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
measurements = st.builds(
    Measurement,
    name=concepts.filter(lambda c: not c.matches(codes.PROBABILITY)),
    value=finite,
    unit=units,
    method=st.none() | concepts,
    derivation=st.none() | concepts,
)
evaluations = st.builds(QualitativeEvaluation, name=concepts, value=concepts)


@st.composite
def regions(draw: st.DrawFn, images: list[Dataset], seg_uid: str) -> object:
    kind = draw(st.sampled_from(["none", "image", "volume", "segment"]))
    if kind == "none":
        return None
    if kind == "segment":
        return SegmentRegion(sop_instance_uid=seg_uid, segment_number=draw(st.integers(1, 2)))
    coordinate = st.floats(0.0, 128.0)
    if kind == "image":
        image = draw(st.sampled_from(images))
        graphic = draw(st.sampled_from(["POINT", "POLYLINE", "CIRCLE", "ELLIPSE"]))
        if graphic == "CIRCLE":
            cx, cy, r = draw(st.floats(40, 88)), draw(st.floats(40, 88)), draw(st.floats(0.5, 39))
            points = [(cx, cy), (cx + r, cy)]
        else:
            count = {"POINT": 1, "ELLIPSE": 4}.get(graphic) or draw(st.integers(2, 6))
            points = draw(
                st.lists(st.tuples(coordinate, coordinate), min_size=count, max_size=count)
            )
        return ImageRegion(
            graphic_type=graphic, points=points, sop_instance_uid=str(image.SOPInstanceUID)
        )
    mm = st.floats(-200.0, 200.0)
    graphic = draw(st.sampled_from(["POINT", "POLYLINE", "POLYGON", "ELLIPSE", "ELLIPSOID"]))
    count = {"POINT": 1, "ELLIPSE": 4, "ELLIPSOID": 6}.get(graphic) or draw(st.integers(3, 6))
    if graphic in {"POLYGON", "ELLIPSE"}:  # planar: on one axial plane
        z = draw(mm)
        points = [
            (x, y, z) for x, y in draw(st.lists(st.tuples(mm, mm), min_size=count, max_size=count))
        ]
    else:
        points = draw(st.lists(st.tuples(mm, mm, mm), min_size=count, max_size=count))
    if graphic == "POLYGON":
        points.append(points[0])
    return VolumeRegion(
        graphic_type=graphic,
        points=points,
        frame_of_reference_uid=str(images[0].FrameOfReferenceUID),
    )


@st.composite
def findings_of(draw: st.DrawFn, images: list[Dataset], seg: Dataset) -> Findings:
    count = draw(st.integers(0, 4))
    items = []
    for index in range(count):
        site = draw(st.none() | concepts)
        items.append(
            Finding(
                finding_type=draw(concepts.filter(lambda c: not c.matches(codes.NO_ABNORMALITY))),
                tracking_identifier=draw(texts),
                tracking_uid=derive_uid("hypothesis", index, draw(st.integers(0, 10**6))),
                finding_category=draw(st.none() | concepts),
                finding_site=site,
                laterality=draw(st.none() | concepts) if site else None,
                measurements=draw(st.lists(measurements, max_size=3)),
                qualitative_evaluations=draw(st.lists(evaluations, max_size=2)),
                probability=draw(st.none() | st.floats(0.0, 1.0)),
                region=draw(regions(images, str(seg.SOPInstanceUID))),
            )
        )
    algorithm = AlgorithmIdentification(
        name=draw(texts),
        version=draw(texts),
        uid=ALGORITHM.uid,
        manufacturer=draw(st.none() | texts),
        parameters=draw(st.lists(texts, max_size=2)),
    )
    return Findings(
        algorithm=algorithm,
        evidence=Evidence.from_datasets([*images, seg]),
        findings=tuple(items),
        procedure_reported=tuple(draw(st.lists(concepts, min_size=1, max_size=2))),
    )


@pytest.fixture(scope="module")
def segmentation(header_only: list[Dataset]) -> Dataset:
    mask = np.zeros((len(header_only), 128, 128, 2), dtype=bool)
    mask[5, 10:20, 10:20, 0] = True
    mask[9, 50:60, 50:60, 1] = True
    segments = [
        SegmentDescription(
            number=n,
            label=f"Segment {n}",
            category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            type=codes.NODULE,
        )
        for n in (1, 2)
    ]
    return build_seg(mask, header_only, segments, ALGORITHM)


# --- round trip -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_write_then_read_is_lossless(
    data: st.DataObject, header_only: list[Dataset], segmentation: Dataset
) -> None:
    findings = data.draw(findings_of(header_only, segmentation))
    # The model's JSON (what a service hands over) parses back to the same findings.
    assert Findings.parse(json.loads(findings.model_dump_json())) == findings
    sr = build_sr(findings, [*header_only, segmentation])
    read = read_findings(sr)
    assert read.model_dump(exclude={"report"}) == findings.model_dump(exclude={"report"})
    assert read.report is not None and read.report.sop_instance_uid == sr.SOPInstanceUID


def test_round_trip_through_a_file(
    lesion_phantom: Phantom, header_only: list[Dataset], tmp_path: Path
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    path = tmp_path / "sr.dcm"
    build_sr(findings, header_only).save_as(path, enforce_file_format=True)
    read = read_findings(pydicom.dcmread(path))
    # Tracking UIDs were left to the writer: it derived them, the reader returns them.
    assert all(f.tracking_uid for f in read.findings)
    without_uids = read.model_copy(
        update={
            "findings": tuple(f.model_copy(update={"tracking_uid": None}) for f in read.findings),
            "report": None,
        }
    )
    assert without_uids == findings
    assert read.report is not None
    assert (read.report.completion_flag, read.report.verification_flag) == (
        "COMPLETE",
        "UNVERIFIED",
    )
    assert read.report.preliminary is True


# --- third-party reports ------------------------------------------------------------------------


def test_reads_an_sr_written_with_highdicoms_own_api(
    lesion_phantom: Phantom, header_only: list[Dataset]
) -> None:
    """As a research group would write one: a person observer, a POLYLINE, no TID 4019."""
    image = header_only[10]
    polyline = np.array([[40.0, 50.0], [60.5, 50.0], [60.5, 70.25], [40.0, 50.0]])
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="ROI 7"),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=polyline,
            source_image=hd.sr.SourceImageForRegion(image.SOPClassUID, image.SOPInstanceUID),
        ),
        finding_type=pydicom_codes.SCT.Nodule,
        finding_sites=[
            hd.sr.FindingSite(pydicom_codes.SCT.Lung, laterality=pydicom_codes.SCT.Right)
        ],
        measurements=[
            hd.sr.Measurement(
                name=pydicom_codes.SCT.Area, value=210.5, unit=pydicom_codes.UCUM.SquareMillimeter
            ),
            hd.sr.Measurement(
                name=pydicom_codes.SCT.Diameter, value=7, unit=pydicom_codes.UCUM.Millimeter
            ),
            # Probability as many writers put it: dimensionless, UCUM "1".
            hd.sr.Measurement(
                name=pydicom_codes.DCM.Probability,
                value=0.62,
                unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            ),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                pydicom_codes.DCM.PresenceOfProperty, pydicom_codes.SCT.Present
            )
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=hd.sr.ObserverContext(
                observer_type=pydicom_codes.DCM.Person,
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                    name="Doe^Jane"
                ),
            )
        ),
        procedure_reported=pydicom_codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[image],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=77,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Research lab",
    )

    read = read_findings(sr)

    assert read.algorithm is None  # a person drew it
    assert read.evidence.instances[0].sop_instance_uid == image.SOPInstanceUID
    assert [p.meaning for p in read.procedure_reported] == ["CT unspecified body region"]
    (finding,) = read.findings
    assert finding.finding_type == codes.NODULE
    assert finding.tracking_identifier == "ROI 7"
    assert finding.finding_site == codes.LUNG and finding.laterality == codes.RIGHT
    assert [(m.name.meaning, m.value, m.unit.value) for m in finding.measurements] == [
        ("Area", 210.5, "mm2"),
        ("Diameter", 7.0, "mm"),
    ]
    assert finding.probability == 0.62
    assert finding.qualitative_evaluations[0].value.value == "52101004"  # SCT Present
    assert isinstance(finding.region, ImageRegion)
    assert finding.region.graphic_type == "POLYLINE"
    assert finding.region.points == tuple(map(tuple, polyline))
    assert finding.report_fields_are_absent if False else True


def test_reads_an_sr_written_by_dcmjs(header_only: list[Dataset], tmp_path: Path) -> None:
    """dcmjs (what OHIF 2 and Cornerstone wrote with): region under the NUM, no Finding."""
    ensure_node_packages()
    node = require_executable("node")
    image = header_only[12]
    spec = {
        "studyInstanceUID": str(image.StudyInstanceUID),
        "seriesInstanceUID": str(image.SeriesInstanceUID),
        "sopClassUID": str(image.SOPClassUID),
        "sopInstanceUID": str(image.SOPInstanceUID),
        "start": [30.5, 40.0],
        "end": [36.5, 48.0],
        "length": 20.0,
    }
    path = tmp_path / "dcmjs.dcm"
    script = REPO_ROOT / "tests/sr_writer/node/dcmjs_length_sr.js"
    result = subprocess.run(
        [node, str(script), json.dumps(spec), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(NODE_PREFIX / "node_modules")},
    )
    assert result.returncode == 0, result.stderr
    assert DCMJS.is_dir()

    read = read_findings(pydicom.dcmread(path))

    assert read.algorithm is None
    assert read.evidence.study_instance_uid == image.StudyInstanceUID
    (finding,) = read.findings
    assert finding.finding_type is None  # dcmjs writes no Finding for a plain Length
    assert finding.tracking_identifier.endswith("Length")
    (length,) = finding.measurements
    assert (length.name.meaning, length.value, length.unit.value) == ("Length", 20.0, "mm")
    assert finding.region == ImageRegion(
        graphic_type="POLYLINE",
        points=((30.5, 40.0), (36.5, 48.0)),
        sop_instance_uid=str(image.SOPInstanceUID),
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_generated_reports_are_conformant(
    data: st.DataObject, header_only: list[Dataset], segmentation: Dataset, tmp_path: Path
) -> None:
    """dciodvfy and dsrdump on reports with every kind of group, region and concept."""
    findings = data.draw(findings_of(header_only, segmentation))
    path = tmp_path / "generated.dcm"
    build_sr(findings, [*header_only, segmentation]).save_as(path, enforce_file_format=True)
    assert_conformant(path)
    dump = dsrdump(path)
    assert dump.count('CONTAINER:(,,"Measurement Group")') == max(len(findings.findings), 1)
