"""Checks of findings against their evidence, run before any DICOM is built.

The model checks what it can alone (types, text lengths, finite numbers, point counts); what
needs the source images (is the image in the evidence, is the graphic inside it) is checked here.
Each failure is an :mod:`sr_writer.errors` class naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom.dataset import Dataset

from sr_writer.errors import (
    GraphicOutsideImageError,
    InvalidValueError,
    MissingValueError,
    ReferenceNotInEvidenceError,
)
from sr_writer.findings import (
    AlgorithmIdentification,
    Findings,
    ImageRegion,
    SegmentRegion,
    VolumeRegion,
)


def index_evidence(findings: Findings, evidence: Sequence[Dataset]) -> dict[str, Dataset]:
    """The evidence datasets of ``findings.evidence`` by SOP Instance UID, checked.

    ``evidence`` may hold more datasets than the findings list (those are not recorded), but
    every instance that ``findings.evidence`` lists must be there, in its study.
    """
    given = {str(ds.SOPInstanceUID): ds for ds in evidence}
    selected: dict[str, Dataset] = {}
    for index, instance in enumerate(findings.evidence.instances):
        dataset = given.get(instance.sop_instance_uid)
        field = f"evidence.instances.{index}"
        if dataset is None:
            raise ReferenceNotInEvidenceError(
                field, f"no evidence dataset with SOP Instance UID {instance.sop_instance_uid}"
            )
        if str(dataset.StudyInstanceUID) != findings.evidence.study_instance_uid:
            raise InvalidValueError(field, "the dataset belongs to another study")
        if str(dataset.SeriesInstanceUID) != instance.series_instance_uid:
            raise InvalidValueError(field, "the dataset belongs to another series")
        if str(dataset.SOPClassUID) != instance.sop_class_uid:
            raise InvalidValueError(field, "the dataset has another SOP Class UID")
        selected[instance.sop_instance_uid] = dataset
    return selected


def require_algorithm(findings: Findings) -> AlgorithmIdentification:
    if findings.algorithm is None:
        raise MissingValueError("algorithm", "a report this library writes names its algorithm")
    return findings.algorithm


def check_regions(findings: Findings, evidence: Mapping[str, Dataset]) -> None:
    """Every region refers to the evidence and lies inside its image."""
    frames_of_reference = {
        str(ds.FrameOfReferenceUID) for ds in evidence.values() if "FrameOfReferenceUID" in ds
    }
    for index, finding in enumerate(findings.findings):
        region = finding.region
        field = f"findings.{index}.region"
        if isinstance(region, ImageRegion):
            _check_image_region(region, evidence, field)
        elif isinstance(region, VolumeRegion):
            if region.frame_of_reference_uid not in frames_of_reference:
                raise ReferenceNotInEvidenceError(
                    f"{field}.frame_of_reference_uid",
                    "no evidence image is in this frame of reference",
                )
        elif isinstance(region, SegmentRegion) and region.sop_instance_uid not in evidence:
            raise ReferenceNotInEvidenceError(
                f"{field}.sop_instance_uid", "the segmentation is not in the evidence"
            )


def _check_image_region(region: ImageRegion, evidence: Mapping[str, Dataset], field: str) -> None:
    dataset = evidence.get(region.sop_instance_uid)
    if dataset is None:
        raise ReferenceNotInEvidenceError(
            f"{field}.sop_instance_uid", f"image {region.sop_instance_uid} is not in the evidence"
        )
    if "Rows" not in dataset or "Columns" not in dataset:
        raise InvalidValueError(f"{field}.sop_instance_uid", "the referenced instance is no image")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if region.frame_number is not None and region.frame_number > frames:
        raise ReferenceNotInEvidenceError(
            f"{field}.frame_number", f"the image has {frames} frame(s)"
        )
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    # PS3.3 C.18.6.1.1: (0, 0) is the top left corner of the top left pixel, (columns, rows)
    # the bottom right corner of the bottom right pixel.
    for point_index, (column, row) in enumerate(region.points):
        if not (0.0 <= column <= columns and 0.0 <= row <= rows):
            raise GraphicOutsideImageError(
                f"{field}.points.{point_index}",
                f"({column}, {row}) lies outside the {columns}x{rows} image",
            )
    if region.graphic_type == "CIRCLE":
        # The circle itself (centre, point on the perimeter) must fit, not only its two points.
        (cx, cy), (px, py) = region.points
        radius = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
        if cx - radius < 0 or cy - radius < 0 or cx + radius > columns or cy + radius > rows:
            raise GraphicOutsideImageError(
                f"{field}.points", f"the circle extends outside the {columns}x{rows} image"
            )
