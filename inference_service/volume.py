"""Assemble a series of single-frame images into a volume, checking its geometry (PS3.3 C.7.6.2).

The slices are sorted by their position along the slice normal (Image Position (Patient)
projected on the cross product of the Image Orientation (Patient) cosines), never by Instance
Number, which archives and modalities do not keep consistent. A volume is refused (a permanent
error naming the instance and the reason) when:

- an instance has no Pixel Data, or several frames, or more than one sample per pixel;
- the instances do not share Rows/Columns, Pixel Spacing and Image Orientation (Patient)
  ("mixed orientation": e.g. an axial and a coronal series under one Series Instance UID);
- the slices are not stacked along the normal, two share a position, or the spacing between
  neighbours varies ("missing slice": a gap of more than 1.5 times the usual spacing);
- the pixel data use a transfer syntax that cannot be decoded here (JPEG Baseline/Extended,
  JPEG Lossless, JPEG-LS, JPEG 2000 and RLE are decoded through pylibjpeg and its plugins).

Stored values become modality values (Hounsfield units for CT) through Rescale Slope and
Intercept (PS3.3 C.11.1.1.2), slice by slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from inference_service.errors import PermanentError
from inference_service.manifest import InputSpec

#: Cosines of two instances' orientations may differ by this much (rounding in the DS strings).
ORIENTATION_TOLERANCE = 1e-3
#: Neighbouring slices may be up to this fraction farther apart or closer than the usual spacing.
SPACING_TOLERANCE = 0.1


class GeometryError(PermanentError):
    """The series cannot be a volume (mixed orientation, gap, size mismatch)."""


@dataclass
class Volume:
    """A stack of slices in modality units with the geometry to map voxels to patient mm (LPS).

    ``values`` is [slice, row, column]; slice 0 is the one lowest along the normal.
    """

    values: np.ndarray
    #: (slice spacing, row spacing, column spacing) in mm: the distance between voxel centres.
    spacing_mm: tuple[float, float, float]
    origin_mm: np.ndarray
    #: 3x3: unit vectors (patient LPS) of increasing slice, row and column index. Moving down
    #: the rows follows the *column* cosines of Image Orientation (Patient), and vice versa.
    directions: np.ndarray
    #: The source instances, sorted like the slices.
    datasets: list[Dataset]
    frame_of_reference_uid: str | None
    modality: str

    def voxel_to_patient(self, index: np.ndarray) -> np.ndarray:
        """Patient coordinates (mm) of voxel indices [..., (slice, row, column)]."""
        index = np.asarray(index, dtype=np.float64)
        spacing = np.asarray(self.spacing_mm)
        result: np.ndarray = self.origin_mm + (index * spacing) @ self.directions
        return result

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_mm))


def _floats(dataset: Dataset, keyword: str, count: int) -> np.ndarray:
    value = dataset.get(keyword)
    uid = dataset.get("SOPInstanceUID", "?")
    if value is None:
        raise GeometryError(f"instance {uid}: {keyword} is missing")
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError(f"instance {uid}: {keyword} {value!r} is not numeric") from None
    if array.shape != (count,):
        raise GeometryError(f"instance {uid}: {keyword} must have {count} values")
    return array


def check_series(datasets: Sequence[Dataset], spec: InputSpec, model: str) -> None:
    """Modality, slice count and pixel data presence against the model's input spec."""
    if not datasets:
        raise PermanentError("the series has no instances", status_code=404)
    modalities = sorted({str(ds.get("Modality", "")) for ds in datasets})
    if modalities != [spec.modality]:
        raise PermanentError(
            f"model {model} needs a {spec.modality} series; this series is "
            f"{'/'.join(m or '(no Modality)' for m in modalities)}"
        )
    for ds in datasets:
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            raise PermanentError(f"instance {ds.get('SOPInstanceUID', '?')}: no Pixel Data")
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise PermanentError(
                f"instance {ds.SOPInstanceUID}: multi-frame images are not supported "
                "(send a series of single-frame images)"
            )
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise PermanentError(f"instance {ds.SOPInstanceUID}: SamplesPerPixel must be 1")
    count = len(datasets)
    if count < spec.series.min_slices:
        raise PermanentError(
            f"model {model} needs at least {spec.series.min_slices} slices; the series has {count}"
        )
    if spec.series.max_slices is not None and count > spec.series.max_slices:
        raise PermanentError(
            f"model {model} takes at most {spec.series.max_slices} slices; the series has {count}"
        )
    if spec.series.body_parts:
        parts = {str(ds.get("BodyPartExamined", "")).upper() for ds in datasets}
        if not parts & {p.upper() for p in spec.series.body_parts}:
            raise PermanentError(
                f"model {model} needs BodyPartExamined in {list(spec.series.body_parts)}; "
                f"the series has {sorted(parts)}"
            )


def _sorted_by_position(datasets: Sequence[Dataset]) -> tuple[list[Dataset], np.ndarray, float]:
    first = datasets[0]
    orientation = _floats(first, "ImageOrientationPatient", 6)
    size = (int(first.Rows), int(first.Columns))
    pixel_spacing = _floats(first, "PixelSpacing", 2)
    for ds in datasets[1:]:
        if (
            np.max(np.abs(_floats(ds, "ImageOrientationPatient", 6) - orientation))
            > ORIENTATION_TOLERANCE
        ):
            raise GeometryError(
                f"mixed orientation: instance {ds.SOPInstanceUID} has ImageOrientationPatient "
                f"{list(ds.ImageOrientationPatient)}, instance {first.SOPInstanceUID} has "
                f"{list(first.ImageOrientationPatient)}"
            )
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise GeometryError(
                f"instance {ds.SOPInstanceUID} is {ds.Rows}x{ds.Columns}, "
                f"instance {first.SOPInstanceUID} is {size[0]}x{size[1]}"
            )
        if np.max(np.abs(_floats(ds, "PixelSpacing", 2) - pixel_spacing)) > 1e-4:
            raise GeometryError(
                f"instance {ds.SOPInstanceUID} has PixelSpacing {list(ds.PixelSpacing)}, "
                f"instance {first.SOPInstanceUID} has {list(first.PixelSpacing)}"
            )
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    positions = np.stack([_floats(ds, "ImagePositionPatient", 3) for ds in datasets])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    sorted_datasets = [datasets[i] for i in order]
    along = along[order]
    positions = positions[order]
    # Every slice must lie on the line through the first along the normal.
    in_plane = positions - positions[0] - np.outer(along - along[0], normal)
    drift = np.linalg.norm(in_plane, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] > max(0.5 * float(np.min(pixel_spacing)), 0.01):
        raise GeometryError(
            f"instance {sorted_datasets[worst].SOPInstanceUID} is shifted {drift[worst]:.2f} mm "
            "in-plane from the others: the slices are not stacked along the normal"
        )
    if len(datasets) == 1:
        thickness = float(first.get("SliceThickness") or 1.0)
        return sorted_datasets, positions[0], thickness
    gaps = np.diff(along)
    duplicates = np.flatnonzero(gaps < 1e-3)
    if duplicates.size:
        i = int(duplicates[0])
        raise GeometryError(
            f"instances {sorted_datasets[i].SOPInstanceUID} and "
            f"{sorted_datasets[i + 1].SOPInstanceUID} share the position {along[i]:.3f} mm"
        )
    spacing = float(np.median(gaps))
    irregular = np.flatnonzero(np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing)
    if irregular.size:
        i = int(irregular[0])
        missing = round(gaps[i] / spacing) - 1
        reason = f"about {missing} missing slice(s)" if missing >= 1 else "irregular spacing"
        raise GeometryError(
            f"{reason}: {gaps[i]:.2f} mm between instances {sorted_datasets[i].SOPInstanceUID} "
            f"and {sorted_datasets[i + 1].SOPInstanceUID} (at {along[i]:.2f} and "
            f"{along[i + 1]:.2f} mm along the normal), where the series is spaced {spacing:.2f} mm"
        )
    return sorted_datasets, positions[0], spacing


def decode_modality_values(ds: Dataset) -> np.ndarray:
    """The slice's pixels in modality units (float32), through Rescale Slope/Intercept."""
    syntax = (
        UID(ds.file_meta.TransferSyntaxUID)
        if "TransferSyntaxUID" in ds.get("file_meta", {})
        else None
    )
    try:
        # pydicom.pixels.pixel_array, not ds.pixel_array: the latter keeps a decoded copy in
        # the dataset, a second copy of the whole series for as long as the dataset lives.
        pixels = pixel_array(ds)
    except Exception as error:  # pydicom raises NotImplementedError/RuntimeError/ValueError
        name = f"{syntax} ({syntax.name})" if syntax is not None else "unknown"
        raise PermanentError(
            f"instance {ds.SOPInstanceUID}: cannot decode pixel data in transfer syntax {name}: "
            f"{error}",
            status_code=422,
        ) from None
    values = pixels.astype(np.float32, copy=False)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0:
        values = values * np.float32(slope)
    if intercept != 0.0:
        values = values + np.float32(intercept)
    return values


def assemble_volume(
    datasets: Sequence[Dataset], spec: InputSpec, model: str, *, release_pixel_data: bool = False
) -> Volume:
    """Check, sort, decode and stack a series into a :class:`Volume` (or a PermanentError).

    With ``release_pixel_data`` each dataset's Pixel Data is deleted once decoded: the SR and
    SEG need only the headers, and a 512x512x200 series holds 100 MB of it.
    """
    check_series(datasets, spec, model)
    ordered, origin, slice_spacing = _sorted_by_position(datasets)
    first = ordered[0]
    orientation = _floats(first, "ImageOrientationPatient", 6)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    values = np.empty((len(ordered), int(first.Rows), int(first.Columns)), dtype=np.float32)
    for index, ds in enumerate(ordered):
        decoded = decode_modality_values(ds)
        if decoded.shape != values.shape[1:]:
            raise GeometryError(
                f"instance {ds.SOPInstanceUID}: pixel data of shape {decoded.shape}"
            )
        values[index] = decoded
        if release_pixel_data:
            del ds.PixelData
    row_direction = orientation[:3] / np.linalg.norm(orientation[:3])
    column_direction = orientation[3:] / np.linalg.norm(orientation[3:])
    return Volume(
        values=values,
        spacing_mm=(slice_spacing, row_spacing, column_spacing),
        origin_mm=origin,
        directions=np.stack(
            [np.cross(row_direction, column_direction), column_direction, row_direction]
        ),
        datasets=ordered,
        frame_of_reference_uid=str(first.FrameOfReferenceUID)
        if "FrameOfReferenceUID" in first
        else None,
        modality=str(first.Modality),
    )
