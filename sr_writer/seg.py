"""Masks -> DICOM Segmentation (Segmentation IOD, PS3.3 A.51), binary or fractional, on highdicom.

One segment per finding type, each with its coded Segmented Property Category and Type
(PS3.3 C.8.20.4, CID 7150/7151) and the algorithm identification (Segment Algorithm Type
AUTOMATIC, Segmentation Algorithm Identification = TID 4019 name/version). The SR's TID 1411
groups point at a segment by the SEG's SOP Instance UID and the segment number. The UIDs come
from :func:`sr_writer.derive_result_uids`, so a re-run replaces the SEG instead of adding one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from sr_writer.errors import EmptyMaskError, InvalidValueError, NonFiniteValueError
from sr_writer.findings import AlgorithmIdentification, SegmentDescription
from sr_writer.part10 import as_part10
from sr_writer.templates.tid1501 import coded
from sr_writer.uids import ResultUIDs, derive_result_uids, derive_uid

SegmentationType = Literal["BINARY", "FRACTIONAL"]


def build_seg(
    mask: np.ndarray,
    source_images: Sequence[Dataset],
    segments: Sequence[SegmentDescription],
    algorithm: AlgorithmIdentification,
    *,
    segmentation_type: SegmentationType = "BINARY",
    uids: ResultUIDs | None = None,
    series_number: int = 9002,
    instance_number: int = 1,
) -> Dataset:
    """Build a SEG over ``source_images`` (header-only datasets are enough: no pixel data).

    ``mask`` is (frames, rows, columns) or (frames, rows, columns, segments); plane ``i`` lies
    on ``source_images[i]``. BINARY: booleans or 0/1 per segment, or one integer label map whose
    value k marks segment k. FRACTIONAL: floats in [0, 1] (stored as 0..255). ``segments`` gives
    each segment's number (1..n in order), label and codes.

    Raises :class:`sr_writer.EmptyMaskError` for a mask (or a segment) with no foreground,
    :class:`sr_writer.InvalidValueError` for a shape or values that do not fit, before any DICOM
    is built. The result saves as Part 10 (``save_as(path, enforce_file_format=True)``).
    """
    check_mask(mask, source_images, segments, segmentation_type)
    if uids is None:
        first = source_images[0]
        uids = derive_result_uids(
            str(first.StudyInstanceUID),
            str(first.SeriesInstanceUID),
            algorithm.uid,
            algorithm.version,
        )
    # Segmentation Algorithm Identification (PS3.3 10.16): family "Artificial Intelligence"
    # (DCM 123110, CID 7162), name and version as in the SR's TID 4019.
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.DCM.ArtificialIntelligence,
        version=algorithm.version,
        source=algorithm.manufacturer,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=segment.number,
            segment_label=segment.label,
            segmented_property_category=coded(segment.category),
            segmented_property_type=coded(segment.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id,
            # Both or neither (PS3.3 C.8.20.4): a missing UID is derived, stable across re-runs.
            tracking_uid=(
                segment.tracking_uid
                or derive_uid("fedgate-segment", uids.seg_sop_instance_uid, segment.number)
            )
            if segment.tracking_identifier
            else None,
            tracking_id=segment.tracking_identifier,
            display_color=hd.color.CIELabColor.from_rgb(
                *(segment.color or palette(segment.number))
            ),
        )
        for segment in segments
    ]
    pixels = mask
    if segmentation_type == "BINARY" and mask.dtype != np.bool_ and mask.ndim == 4:
        pixels = mask.astype(np.bool_)
    seg = hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues[segmentation_type],
        segment_descriptions=descriptions,
        series_instance_uid=uids.seg_series_instance_uid,
        series_number=series_number,
        sop_instance_uid=uids.seg_sop_instance_uid,
        instance_number=instance_number,
        manufacturer=algorithm.manufacturer or "fedgate",
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        device_serial_number=algorithm.uid,
        content_label="AI_SEG",
        content_description=f"AI {algorithm.name} {algorithm.version}"[:64],
        series_description=f"AI {algorithm.name} {algorithm.version} SEG"[:64],
    )
    return as_part10(seg)


# Distinct, saturated colours that read well over grey CT (the first is a warm red, as the
# segments of most viewers start). Segment n takes PALETTE[(n - 1) % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 60, 50),
    (60, 200, 80),
    (60, 120, 240),
    (240, 200, 40),
    (200, 80, 220),
    (40, 210, 220),
    (250, 140, 30),
    (150, 230, 60),
)


def palette(number: int) -> tuple[int, int, int]:
    """The default display colour (sRGB) of segment ``number``."""
    return PALETTE[(number - 1) % len(PALETTE)]


def check_mask(
    mask: np.ndarray,
    source_images: Sequence[Dataset],
    segments: Sequence[SegmentDescription],
    segmentation_type: SegmentationType,
) -> None:
    """Shape, values and foreground of ``mask``; each failure names what is wrong."""
    if not source_images:
        raise InvalidValueError("source_images", "at least one source image is needed")
    if not segments:
        raise InvalidValueError("segments", "at least one segment description is needed")
    numbers = [segment.number for segment in segments]
    if numbers != list(range(1, len(segments) + 1)):
        raise InvalidValueError("segments", f"segment numbers must be 1..n in order, got {numbers}")
    if mask.ndim not in (3, 4):
        raise InvalidValueError(
            "mask", f"expected (frames, rows, columns[, segments]), got {mask.shape}"
        )
    frames, rows, columns = mask.shape[:3]
    if frames != len(source_images):
        raise InvalidValueError("mask", f"{frames} planes for {len(source_images)} source images")
    first = source_images[0]
    if (rows, columns) != (int(first.Rows), int(first.Columns)):
        raise InvalidValueError(
            "mask", f"planes of {rows}x{columns}, source images of {first.Rows}x{first.Columns}"
        )
    if mask.ndim == 4 and mask.shape[3] != len(segments):
        raise InvalidValueError(
            "mask", f"{mask.shape[3]} segment planes for {len(segments)} segments"
        )
    if segmentation_type == "FRACTIONAL":
        _check_fractional(mask)
    elif mask.dtype.kind == "f":
        raise InvalidValueError("mask", "a BINARY mask is boolean or integer, not float")
    elif mask.ndim == 3 and mask.dtype != np.bool_ and int(mask.max()) > len(segments):
        raise InvalidValueError("mask", f"label {int(mask.max())} but {len(segments)} segments")
    one_segment_only = mask.dtype == np.bool_ or segmentation_type == "FRACTIONAL"
    if mask.ndim == 3 and one_segment_only and len(segments) != 1:
        raise InvalidValueError("mask", "a 3D boolean/fractional mask holds one segment")
    _check_foreground(mask, segments)


def _check_fractional(mask: np.ndarray) -> None:
    if mask.dtype.kind != "f":
        raise InvalidValueError("mask", "a FRACTIONAL mask holds floats in [0, 1]")
    if not np.isfinite(mask).all():
        raise NonFiniteValueError("mask", "NaN or infinity in a FRACTIONAL mask")
    if float(mask.min()) < 0.0 or float(mask.max()) > 1.0:
        raise InvalidValueError("mask", "FRACTIONAL values must lie in [0, 1]")


def _check_foreground(mask: np.ndarray, segments: Sequence[SegmentDescription]) -> None:
    if not mask.any():
        raise EmptyMaskError("mask", "no foreground pixel: nothing to segment")
    for index, segment in enumerate(segments):
        if mask.ndim == 4:
            present = bool(mask[..., index].any())
        elif mask.dtype == np.bool_ or mask.dtype.kind == "f":
            present = True  # one segment, and the mask has foreground
        else:
            present = bool((mask == segment.number).any())
        if not present:
            raise EmptyMaskError(f"segments.{index}", f"segment {segment.number} has no pixel")
