"""Turn a :class:`~inference_service.volume.Volume` into the tensor a model's manifest asks for.

In order: resample to the target spacing (trilinear, ``scipy.ndimage.zoom``), then to the
target shape; clip to the intensity window; normalise; lay the axes out (``NCDHW`` etc.); cast.
The grid the tensor was computed on is returned with it, so that a mask output can be mapped
back onto the source slices for the SEG and the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference_service.manifest import InputSpec
from inference_service.tensors import DATATYPES
from inference_service.volume import Volume


@dataclass(frozen=True)
class PreparedInput:
    tensor: np.ndarray
    #: Shape (slice, row, column) of the grid the model saw, and its spacing in mm.
    grid_shape: tuple[int, int, int]
    grid_spacing_mm: tuple[float, float, float]
    #: Whether the grid differs from the source volume's (a mask must then be resampled back).
    resampled: bool


def _resample(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    factors = [new / old for new, old in zip(shape, values.shape, strict=True)]
    result: np.ndarray = ndimage.zoom(values, factors, order=1, mode="nearest", grid_mode=True)
    return result


def to_layout(volume: np.ndarray, axis_order: str) -> np.ndarray:
    """[D, H, W] -> the manifest's layout (a view, no copy)."""
    if axis_order == "NCDHW":
        return volume[np.newaxis, np.newaxis]
    if axis_order == "NDHWC":
        return volume[np.newaxis, ..., np.newaxis]
    if axis_order == "NCHWD":
        return np.moveaxis(volume, 0, -1)[np.newaxis, np.newaxis]
    return volume  # DHW


def from_layout(tensor: np.ndarray, axis_order: str) -> np.ndarray:
    """The manifest's layout -> [D, H, W] (inverse of :func:`to_layout`)."""
    if axis_order == "NCDHW":
        return tensor[0, 0]
    if axis_order == "NDHWC":
        return tensor[0, ..., 0]
    if axis_order == "NCHWD":
        return np.moveaxis(tensor[0, 0], -1, 0)
    return tensor


def prepare_input(volume: Volume, spec: InputSpec) -> PreparedInput:
    values = volume.values
    spacing = volume.spacing_mm
    shape: tuple[int, int, int] = values.shape
    if spec.spacing_mm is not None:
        extent = np.asarray(shape) * np.asarray(spacing)
        shape = tuple(max(1, round(e / s)) for e, s in zip(extent, spec.spacing_mm, strict=True))
    if spec.shape is not None:
        shape = spec.shape
    resampled = shape != values.shape
    if resampled:
        values = _resample(values, shape)
        spacing = tuple(
            old * size / new
            for old, size, new in zip(volume.spacing_mm, volume.values.shape, shape, strict=True)
        )
    intensity = spec.intensity
    if intensity.window is not None:
        low, high = intensity.window
        values = np.clip(values, low, high)
    if intensity.normalisation == "window" and intensity.window is not None:
        low, high = intensity.window
        values = (values - np.float32(low)) / np.float32(high - low)
    elif intensity.normalisation == "zscore":
        sd = float(values.std())
        values = (values - np.float32(values.mean())) / np.float32(sd if sd > 0 else 1.0)
    elif intensity.normalisation == "linear":
        values = values * np.float32(intensity.scale) + np.float32(intensity.offset)
    dtype = DATATYPES[spec.datatype]
    tensor = np.ascontiguousarray(to_layout(values.astype(dtype, copy=False), spec.axis_order))
    return PreparedInput(tensor, shape, spacing, resampled)


def resample_to(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A model output on its grid -> the source volume's grid (trilinear)."""
    if values.shape == shape:
        return values
    return _resample(values, shape)
