"""Model outputs -> measured results, on the source volume's grid.

A mask output becomes one :class:`LesionResult` per connected component (26-connected, so a
partial-volume voxel touching a lesion by a corner belongs to it) above the manifest's
``min_volume_mm3``:

- volume: the sum, over the component grown by two voxels, of each voxel's partial-volume
  fraction ``(value - background) / (lesion - background)``, times the voxel volume. The
  lesion level is the median of the component's eroded core (its brightest tenth when the
  core is tiny) and the background the median of a ring around it; so edge voxels count by
  how much of them the lesion fills, which a half-contrast voxel count only gets right on
  average (it is off by up to ~20 % for a 6 mm lesion on 1.5 mm slices);
- maximal diameter: from the fraction-weighted second moments in mm: a solid ellipsoid of
  semi-axis a has variance a^2/5 along it, so the longest axis is 2 * sqrt(5 * largest
  eigenvalue). Each voxel averages the object over its own extent (a box of the voxel's size,
  variance s^2/12 per axis), which the image's moments carry and the object's do not, so that
  is subtracted first. For a sphere it is the diameter (within ~5 % from 6 mm on 2.5 mm slices);
- mean attenuation: the mean of the component's voxels (modality units, HU for CT);
- centroid: the fraction-weighted centre, in patient coordinates (mm, LPS).

A class-probability output becomes a :class:`ClassResult` (probability per class label); a
scalar output a :class:`ScalarResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference_service.errors import PermanentError
from inference_service.manifest import ClassProbabilitiesOutput, MaskOutput, ScalarOutput
from inference_service.volume import Volume

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)
_MARGIN = 4
_MIN_CORE_VOXELS = 27


@dataclass(frozen=True)
class LesionResult:
    #: Label in :attr:`MaskResult.labels` (1-based, ordered by size, largest first).
    label: int
    volume_mm3: float
    diameter_mm: float
    mean_value: float
    centroid_mm: tuple[float, float, float]
    voxel_count: int
    #: Slice index range (first, last) the lesion covers.
    slices: tuple[int, int]


@dataclass
class MaskResult:
    output: MaskOutput
    #: Labelled components on the source grid (0: background), uint16 [slice, row, column].
    labels: np.ndarray
    lesions: list[LesionResult]


@dataclass(frozen=True)
class ClassResult:
    output: ClassProbabilitiesOutput
    probabilities: dict[str, float]

    @property
    def finding_probability(self) -> float:
        return self.probabilities[self.output.finding_class]

    @property
    def present(self) -> bool:
        return self.finding_probability >= self.output.decision_threshold

    @property
    def decided_class(self) -> str:
        """``finding_class`` when it reaches the threshold, else the most probable other class."""
        if self.present:
            return self.output.finding_class
        others = {k: p for k, p in self.probabilities.items() if k != self.output.finding_class}
        return max(others, key=lambda label: others[label])


@dataclass(frozen=True)
class ScalarResult:
    output: ScalarOutput
    value: float


Result = MaskResult | ClassResult | ScalarResult


def _measure(
    volume: Volume, labels: np.ndarray, label: int, box: tuple[slice, ...]
) -> LesionResult | None:
    values = volume.values[box]
    component = labels[box] == label
    others = (labels[box] != 0) & ~component
    core = ndimage.binary_erosion(component)
    grown = ndimage.binary_dilation(component, _CONNECTIVITY_26, iterations=2) & ~others
    ring = (
        ndimage.binary_dilation(component, _CONNECTIVITY_26, iterations=4)
        & ~ndimage.binary_dilation(component, _CONNECTIVITY_26, iterations=2)
        & ~others
    )
    # A small lesion on thick slices may have no voxel wholly inside it, so its eroded core
    # still holds partial-volume values: take its brightest tenth instead.
    if core.sum() >= _MIN_CORE_VOXELS:
        lesion_level = float(np.median(values[core]))
    else:
        lesion_level = float(np.percentile(values[component], 90))
    background = float(np.median(values[ring])) if ring.any() else float(values[~component].min())
    contrast = lesion_level - background
    indices = np.argwhere(grown)
    if abs(contrast) < 1e-6:
        fractions = component[grown].astype(np.float64)
    else:
        # Not clipped: the noise of the pure-background voxels then averages out.
        fractions = (values[grown].astype(np.float64) - background) / contrast
    total = float(fractions.sum())
    if total <= 0:
        return None
    spacing = np.asarray(volume.spacing_mm)
    offsets = np.array([s.start for s in box], dtype=np.float64)
    points_mm = (indices + offsets) * spacing
    centre_index = (fractions @ (indices + offsets)) / total
    centred = points_mm - points_mm.T @ fractions / total
    covariance = (centred.T * fractions) @ centred / total - np.diag(spacing**2 / 12.0)
    largest = float(np.linalg.eigvalsh(covariance)[-1])
    slice_indices = np.flatnonzero(component.any(axis=(1, 2))) + box[0].start
    centroid = volume.voxel_to_patient(centre_index)
    return LesionResult(
        label=label,
        volume_mm3=total * volume.voxel_volume_mm3,
        diameter_mm=2.0 * float(np.sqrt(5.0 * max(largest, 0.0))),
        mean_value=float(values[component].mean()),
        centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
        voxel_count=int(component.sum()),
        slices=(int(slice_indices[0]), int(slice_indices[-1])),
    )


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel of ``mask`` (None when there is none)."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    if slices.size == 0:
        return None
    z = slice(int(slices[0]), int(slices[-1]) + 1)
    plane: np.ndarray = np.any(mask[z], axis=0)
    rows = np.flatnonzero(plane.any(axis=1))
    columns = np.flatnonzero(plane.any(axis=0))
    return (z, slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1))


def mask_result(volume: Volume, probability: np.ndarray, output: MaskOutput) -> MaskResult:
    """Label the thresholded mask and measure every component (``probability``: source grid)."""
    if probability.shape != volume.values.shape:
        raise PermanentError(
            f"output {output.name!r}: shape {probability.shape} does not match the volume "
            f"{volume.values.shape}"
        )
    mask = probability > output.threshold
    # np.zeros maps zeroed pages lazily: only the lesions' pages are ever written.
    labels = np.zeros(mask.shape, dtype=np.uint16)
    lesions: list[LesionResult] = []
    # Label only the box that holds the mask: lesions are a tiny part of a CT volume, and
    # labelling all of it (int32 labels, 4 bytes a voxel) costs more than the model.
    crop = _bounding_box(mask)
    if crop is None:
        return MaskResult(output, labels, lesions)
    raw_labels, count = ndimage.label(mask[crop], structure=_CONNECTIVITY_26)
    min_voxels = output.min_volume_mm3 / volume.voxel_volume_mm3
    sizes = np.bincount(raw_labels.ravel(), minlength=count + 1)[1:]
    keep = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels]
    boxes = ndimage.find_objects(raw_labels)
    for raw in keep:
        local = boxes[raw - 1]
        assert local is not None  # a label with voxels always has a box
        box = tuple(
            slice(s.start + c.start, s.stop + c.start) for s, c in zip(local, crop, strict=True)
        )
        grown_box = tuple(
            slice(max(s.start - _MARGIN, 0), min(s.stop + _MARGIN, n))
            for s, n in zip(box, mask.shape, strict=True)
        )
        new_label = len(lesions) + 1
        labels[box][raw_labels[local] == raw] = new_label
        lesion = _measure(volume, labels, new_label, grown_box)
        if lesion is None or lesion.volume_mm3 < output.min_volume_mm3:
            labels[box][labels[box] == new_label] = 0
            continue
        lesions.append(lesion)
    return MaskResult(output, labels, lesions)


def class_result(values: np.ndarray, output: ClassProbabilitiesOutput) -> ClassResult:
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if scores.size != len(output.classes):
        raise PermanentError(
            f"output {output.name!r}: {scores.size} values for {len(output.classes)} classes"
        )
    if output.activation == "softmax":
        exp = np.exp(scores - scores.max())
        scores = exp / exp.sum()
    elif output.activation == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-scores))
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise PermanentError(
            f"output {output.name!r}: values {scores.tolist()} are not probabilities "
            "(set the output's activation in the manifest)"
        )
    return ClassResult(
        output, {c.label: float(p) for c, p in zip(output.classes, scores, strict=True)}
    )


def scalar_result(values: np.ndarray, output: ScalarOutput) -> ScalarResult:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size != 1 or not np.isfinite(array[0]):
        raise PermanentError(f"output {output.name!r}: expected one finite number")
    return ScalarResult(output, float(array[0]))
