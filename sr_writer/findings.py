"""The findings model: what an algorithm found in one study, independent of DICOM encoding.

It mirrors the content of a TID 1500 Measurement Report (PS3.16 A.3 "TID 1500") one-to-one:

- :class:`AlgorithmIdentification` — TID 4019 (name, version, manufacturer, parameters) and the
  device observer of TID 1004, whose Device Observer UID is the algorithm's stable UID;
- :class:`Evidence` — the source instances (Current Requested Procedure Evidence Sequence);
- :class:`Finding` — one measurement group: TID 1410 (planar ROI, :class:`ImageRegion` or a
  planar :class:`VolumeRegion`), TID 1411 (volumetric ROI, a :class:`SegmentRegion` or an
  ELLIPSOID :class:`VolumeRegion`) or TID 1501 (no region: image/study level);
- an empty ``Findings.findings`` list is the study-level "no finding" result, which is still
  written as a report (so a negative study has one).

Text limits follow the value representations the content lands in (PS3.5 6.2): code meanings
and names are LO (64 characters), code values at most 64 (SH, or UC for long code values).
Numeric values must be finite: a DICOM NUM content item (FD) could hold NaN, but no viewer or
reader can interpret one, so NaN/inf is refused at the door.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
from highdicom.spatial import are_points_coplanar
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

# PS3.5 9.1: components of digits without leading zeros, at most 64 characters.
UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
UID = Annotated[str, Field(min_length=1, max_length=64, pattern=UID_PATTERN)]
# LO/SH (PS3.5 6.2): no backslash (the value delimiter) and no control characters.
SINGLE_VALUE_TEXT = r"^[^\\\x00-\x1f]*$"
LongString = Annotated[str, Field(min_length=1, max_length=64, pattern=SINGLE_VALUE_TEXT)]
ShortText = Annotated[str, Field(min_length=1, max_length=1024)]  # TEXT content items (UT)
Finite = Annotated[float, Field(allow_inf_nan=False)]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


class _Model(BaseModel):
    # Frozen: findings are values (hashable, safe to share between threads and caches).
    # extra="forbid": a misspelt field name is an error, not silently dropped.
    # str_strip_whitespace: DICOM pads and drops leading/trailing spaces of text values anyway.
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class CodedConcept(_Model):
    """A coded concept (PS3.3 8.8 Code Sequence Macro): code value, coding scheme, meaning.

    Use the standard codes (``SCT``, ``DCM``, ``LN``, ``UCUM``) via :mod:`sr_writer.codes`; where a
    model needs a concept that has none, its manifest supplies a code with its own coding scheme
    designator (a private scheme, e.g. ``99FEDGATE``), never an invented value in a standard one.
    """

    value: LongString  # SH, or UC (Long Code Value) beyond 16 characters
    scheme_designator: Annotated[str, Field(min_length=1, max_length=16, pattern=SINGLE_VALUE_TEXT)]
    meaning: LongString
    scheme_version: (
        Annotated[str, Field(min_length=1, max_length=16, pattern=SINGLE_VALUE_TEXT)] | None
    ) = None

    def matches(self, other: CodedConcept) -> bool:
        """Same concept (value and scheme), whatever the meaning's wording."""
        return self.value == other.value and self.scheme_designator == other.scheme_designator

    @classmethod
    def from_code(cls, code: Code) -> CodedConcept:
        """The concept of a pydicom/highdicom ``Code`` (or highdicom ``CodedConcept``)."""
        return cls(
            value=str(code.value),
            scheme_designator=str(code.scheme_designator),
            meaning=str(code.meaning),
            scheme_version=code.scheme_version or None,
        )


# Two concepts the model itself needs (sr_writer.codes re-exports them with the others).
# "Imaging procedure" (SCT 363679005, CID 100) is the procedure reported when none is given.
IMAGING_PROCEDURE = CodedConcept.from_code(codes.SCT.ImagingProcedure)
# "Probability" (DCM 122157): the NUM item that carries Finding.probability.
PROBABILITY = CodedConcept.from_code(codes.DCM.Probability)
# "No abnormality" (DCM 111286): the finding of the group that records a negative study.
NO_ABNORMALITY = CodedConcept.from_code(codes.DCM.NoAbnormality)


class AlgorithmIdentification(_Model):
    """The algorithm that produced the findings (TID 4019, and the device of TID 1004).

    ``uid`` is the algorithm's stable UID: it is written as the Device Observer UID and is one of
    the inputs of the deterministic result UIDs (:func:`sr_writer.derive_result_uids`).
    """

    name: LongString
    version: LongString
    uid: UID
    manufacturer: LongString | None = None
    parameters: tuple[ShortText, ...] = ()


class SourceInstance(_Model):
    """One source image: its series, SOP Class and SOP Instance UIDs."""

    series_instance_uid: UID
    sop_class_uid: UID
    sop_instance_uid: UID


class Evidence(_Model):
    """The instances the findings were derived from (all of one study)."""

    study_instance_uid: UID
    instances: tuple[SourceInstance, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _each_instance_once(self) -> Evidence:
        seen: set[str] = set()
        for index, instance in enumerate(self.instances):
            if instance.sop_instance_uid in seen:
                raise ValueError(f"instances.{index}: SOP Instance UID listed twice")
            seen.add(instance.sop_instance_uid)
        return self

    @classmethod
    def from_datasets(cls, datasets: Iterable[Dataset]) -> Evidence:
        """The evidence of these datasets (header-only datasets are enough)."""
        datasets = list(datasets)
        if not datasets:
            raise ValueError("evidence: at least one dataset is needed")
        return cls(
            study_instance_uid=str(datasets[0].StudyInstanceUID),
            instances=tuple(
                SourceInstance(
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    sop_instance_uid=str(ds.SOPInstanceUID),
                )
                for ds in datasets
            ),
        )

    @property
    def series_instance_uids(self) -> tuple[str, ...]:
        """The distinct series, in order of first appearance."""
        return tuple(dict.fromkeys(i.series_instance_uid for i in self.instances))

    @property
    def sop_instance_uids(self) -> frozenset[str]:
        return frozenset(i.sop_instance_uid for i in self.instances)


class Measurement(_Model):
    """A numeric measurement (TID 300): concept, finite value, UCUM unit, method, derivation."""

    name: CodedConcept
    value: Finite
    unit: CodedConcept
    method: CodedConcept | None = None
    derivation: CodedConcept | None = None

    @model_validator(mode="after")
    def _unit_is_ucum(self) -> Measurement:
        if self.unit.scheme_designator != "UCUM":
            raise ValueError(f"unit must be a UCUM code, not {self.unit.scheme_designator!r}")
        return self


class QualitativeEvaluation(_Model):
    """A coded name-value pair (TID 1501 row "Qualitative Evaluations"), e.g. presence = present."""

    name: CodedConcept
    value: CodedConcept


def _as_float32(value: float) -> float:
    # Graphic Data (0070,0022) is FL: rounding here keeps write -> read lossless.
    return float(np.float32(value))


Coordinate = Annotated[Finite, AfterValidator(_as_float32)]
Point2D = tuple[Coordinate, Coordinate]
Point3D = tuple[Coordinate, Coordinate, Coordinate]

# Number of points each graphic type needs (PS3.3 C.18.6.1.2 and C.18.9.1.2).
_POINT_COUNTS: dict[str, tuple[int, int | None]] = {
    "POINT": (1, 1),
    "POLYLINE": (2, None),
    "POLYGON": (4, None),  # closed: at least a triangle plus the repeated first point
    "CIRCLE": (2, 2),
    "ELLIPSE": (4, 4),
    "ELLIPSOID": (6, 6),
}


def _check_point_count(graphic_type: str, count: int) -> None:
    low, high = _POINT_COUNTS[graphic_type]
    if count < low or (high is not None and count > high):
        wanted = str(low) if low == high else f"at least {low}"
        raise ValueError(f"a {graphic_type} needs {wanted} points, got {count}")


class ImageRegion(_Model):
    """A 2D graphic (SCOORD) on one source image, in image pixel coordinates (column, row).

    Coordinates are stored as 32-bit floats (as DICOM stores them), rounded on construction.

    Coordinates follow PS3.3 C.18.6.1.1: (0.0, 0.0) is the top left corner of the top left pixel,
    so a point is inside an image of C columns and R rows when 0 <= column <= C and 0 <= row <= R.
    A closed polygon is a POLYLINE whose last point equals its first.
    """

    kind: Literal["image"] = "image"
    # MULTIPOINT is a valid SCOORD but not a region (TID 1410 row "Image Region").
    graphic_type: Literal["POINT", "POLYLINE", "CIRCLE", "ELLIPSE"]
    points: tuple[Point2D, ...]
    sop_instance_uid: UID
    frame_number: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _points_fit_graphic_type(self) -> ImageRegion:
        _check_point_count(self.graphic_type, len(self.points))
        return self


class VolumeRegion(_Model):
    """A 3D graphic (SCOORD3D) in a frame of reference, in patient coordinates (mm, LPS).

    Planar types (POINT, POLYLINE, POLYGON, ELLIPSE) are written as TID 1410 planar
    ROI groups, an ELLIPSOID as a TID 1411 volumetric ROI group (a volume surface).
    """

    kind: Literal["volume"] = "volume"
    graphic_type: Literal["POINT", "POLYLINE", "POLYGON", "ELLIPSE", "ELLIPSOID"]
    points: tuple[Point3D, ...]
    frame_of_reference_uid: UID

    @model_validator(mode="after")
    def _points_fit_graphic_type(self) -> VolumeRegion:
        _check_point_count(self.graphic_type, len(self.points))
        if self.graphic_type == "POLYGON" and self.points[0] != self.points[-1]:
            # PS3.3 C.18.9.1.2: a 3D POLYGON is closed, its last point repeats its first.
            raise ValueError("a POLYGON's last point must equal its first (closed)")
        if self.graphic_type in {"POLYGON", "ELLIPSE"} and not are_points_coplanar(
            np.asarray(self.points, dtype=np.float64)
        ):
            raise ValueError(f"the points of a {self.graphic_type} must lie in one plane")
        return self


class SegmentRegion(_Model):
    """A segment of a DICOM Segmentation (TID 1411 "Referenced Segment")."""

    kind: Literal["segment"] = "segment"
    sop_instance_uid: UID
    segment_number: Annotated[int, Field(ge=1, le=65535)]
    sop_class_uid: UID = SEGMENTATION_STORAGE


Region = Annotated[ImageRegion | VolumeRegion | SegmentRegion, Field(discriminator="kind")]

# 6 decimals (0.0001 %): a model trained across sites is checked against its ONNX graph's
# probability to 1e-6 when read back from its SR; the percent written (at most 10 characters,
# well within a DS's 16) reads back to exactly the same float.
PROBABILITY_DECIMALS = 6
Probability = Annotated[
    float,
    Field(ge=0.0, le=1.0, allow_inf_nan=False),
    AfterValidator(lambda value: round(value, PROBABILITY_DECIMALS)),
]


class Finding(_Model):
    """One finding: a TID 1500 measurement group.

    ``probability`` (0..1, kept to 6 decimals) is written as a NUM item "Probability"
    (DCM 122157) in percent (UCUM "%"), which viewers show as "Probability: 87.00 %" where
    UCUM "1" would read "0.87 1"; a Probability measurement in "%" or "1" is refused, to keep the
    two from being confused. ``finding_type``
    is optional as in TID 1501 (third-party reports, e.g. OHIF's, often leave it out); a writer
    should always give it. ``tracking_uid``
    may be left out: the writer derives one deterministically from the report and the tracking
    identifier, and the reader always fills it in.
    """

    finding_type: CodedConcept | None
    tracking_identifier: LongString
    tracking_uid: UID | None = None
    finding_category: CodedConcept | None = None
    finding_site: CodedConcept | None = None
    laterality: CodedConcept | None = None
    measurements: tuple[Measurement, ...] = ()
    qualitative_evaluations: tuple[QualitativeEvaluation, ...] = ()
    probability: Probability | None = None
    region: Region | None = None

    @model_validator(mode="after")
    def _no_probability_measurement(self) -> Finding:
        for measurement in self.measurements:
            if measurement.name.matches(PROBABILITY) and measurement.unit.value in {"%", "1"}:
                raise ValueError("use Finding.probability, not a measurement named Probability")
        if self.finding_type is not None and self.finding_type.matches(NO_ABNORMALITY):
            raise ValueError("'No abnormality' is written for an empty findings list; omit it")
        if self.laterality is not None and self.finding_site is None:
            raise ValueError("laterality qualifies a finding site: give finding_site too")
        return self


class ReportReference(_Model):
    """Which SR a :class:`Findings` was read from (set by :func:`sr_writer.read_findings`).

    The writer ignores it. ``preliminary`` is True for an AI draft (PreliminaryFlag PRELIMINARY).
    """

    sop_instance_uid: UID
    series_instance_uid: UID
    completion_flag: str
    verification_flag: str
    preliminary: bool | None = None
    content_date: str | None = None
    content_time: str | None = None


class Findings(_Model):
    """What one algorithm found in one study: the content of one TID 1500 Measurement Report.

    An empty ``findings`` list means "no finding" (a negative study still gets a report).
    ``algorithm`` is always set for reports this library writes; a third-party report without
    algorithm identification (e.g. one a person drew in OHIF) reads back with ``None``.
    """

    algorithm: AlgorithmIdentification | None
    evidence: Evidence
    findings: tuple[Finding, ...] = ()
    procedure_reported: tuple[CodedConcept, ...] = Field(default=(IMAGING_PROCEDURE,), min_length=1)
    report: ReportReference | None = None

    @model_validator(mode="after")
    def _unique_tracking(self) -> Findings:
        seen: set[str] = set()
        for index, finding in enumerate(self.findings):
            if finding.tracking_uid is not None:
                if finding.tracking_uid in seen:
                    raise ValueError(f"findings.{index}: tracking_uid used twice")
                seen.add(finding.tracking_uid)
        return self

    @classmethod
    def parse(cls, data: Any) -> Findings:
        """Validate ``data`` (a mapping, e.g. parsed JSON) into findings.

        Raises the :mod:`sr_writer.errors` classes (``MissingValueError`` for a measurement without
        a unit, ``NonFiniteValueError``, ``ValueTooLongError``, ``InvalidValueError``), naming the
        field, instead of pydantic's ``ValidationError``.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise convert_validation_error(error) from None


def convert_validation_error(error: ValidationError) -> ValueError:
    """The :mod:`sr_writer.errors` class for pydantic's first error, naming its field."""
    from sr_writer import errors

    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "findings"
    kind = first["type"]
    reason = first["msg"]
    if kind == "missing":
        return errors.MissingValueError(field, "required value missing")
    if kind == "finite_number":
        return errors.NonFiniteValueError(field, "must be a finite number (not NaN or infinity)")
    if kind == "string_too_long":
        return errors.ValueTooLongError(field, reason)
    return errors.InvalidValueError(field, reason)


class SegmentDescription(_Model):
    """One segment of a Segmentation (PS3.3 C.8.20.4 Segment Description Macro).

    ``category`` and ``type`` are coded from CID 7150 / CID 7151 (e.g. SCT "Morphologically
    abnormal structure" / SCT "Nodule"); ``number`` is the Segment Number, 1-based, and the
    ``SegmentRegion.segment_number`` that a finding uses to point at it.
    """

    number: Annotated[int, Field(ge=1, le=65535)]
    label: LongString
    category: CodedConcept
    type: CodedConcept
    tracking_identifier: LongString | None = None
    tracking_uid: UID | None = None
    # Recommended Display CIELab Value, given as sRGB; None: a colour of a fixed palette by
    # segment number, so viewers (OHIF warns when it is missing) show every run alike.
    color: (
        tuple[
            Annotated[int, Field(ge=0, le=255)],
            Annotated[int, Field(ge=0, le=255)],
            Annotated[int, Field(ge=0, le=255)],
        ]
        | None
    ) = None
