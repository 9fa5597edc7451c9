"""Preprocessing per manifest (spacing, window, normalisation, layout) and provider selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from inference_service.backends.local import (
    LocalBackend,
    ProviderUnavailableError,
    choose_providers,
)
from inference_service.manifest import InputSpec
from inference_service.preprocess import from_layout, prepare_input
from inference_service.settings import OnnxRuntimeSettings
from inference_service.volume import Volume, assemble_volume
from tests.inference_service import phantoms


@pytest.fixture(scope="module")
def volume() -> Volume:
    return assemble_volume(list(phantoms.small_phantom(71).instances()), InputSpec(), "m")


def test_resampling_to_a_target_spacing_keeps_the_extent(volume: Volume) -> None:
    prepared = prepare_input(volume, InputSpec(spacing_mm=(2.0, 2.0, 2.0)))
    assert volume.values.shape == (12, 64, 64)  # 5 mm slices, 4 mm pixels
    assert prepared.grid_shape == (30, 128, 128)
    assert prepared.grid_spacing_mm == pytest.approx((2.0, 2.0, 2.0))
    assert prepared.resampled and prepared.tensor.shape == (1, 1, 30, 128, 128)


@pytest.mark.parametrize("axis_order", ["NCDHW", "NDHWC", "NCHWD", "DHW"])
def test_layouts_round_trip(volume: Volume, axis_order: str) -> None:
    prepared = prepare_input(volume, InputSpec(axis_order=axis_order))
    np.testing.assert_array_equal(from_layout(prepared.tensor, axis_order), volume.values)


def test_window_and_normalisations(volume: Volume) -> None:
    windowed = prepare_input(
        volume, InputSpec(intensity={"window": [-1000, 400], "normalisation": "window"})
    ).tensor
    assert windowed.min() == 0.0 and windowed.max() <= 1.0
    assert windowed.dtype == np.float32
    zscore = prepare_input(volume, InputSpec(intensity={"normalisation": "zscore"})).tensor
    assert abs(float(zscore.mean())) < 1e-3 and float(zscore.std()) == pytest.approx(1.0, rel=1e-3)
    linear = prepare_input(
        volume,
        InputSpec(intensity={"normalisation": "linear", "scale": 0.001, "offset": 1.0}),
    ).tensor
    np.testing.assert_allclose(linear[0, 0], volume.values * 0.001 + 1.0, rtol=1e-5)
    half = prepare_input(volume, InputSpec(datatype="FP16")).tensor
    assert half.dtype == np.float16


def test_gpu_providers_fall_back_to_cpu_unless_required() -> None:
    settings = OnnxRuntimeSettings(
        providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    )
    chosen = choose_providers(settings)
    assert chosen[-1] == "CPUExecutionProvider"
    available = set(onnxruntime.get_available_providers())
    assert [p for p in chosen if p != "CPUExecutionProvider"] == [
        p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available
    ]
    if "CUDAExecutionProvider" not in available:
        required = OnnxRuntimeSettings(
            providers=("CUDAExecutionProvider",), require_first_provider=True
        )
        with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider is required"):
            choose_providers(required)


def test_memory_arena_setting_reaches_onnxruntime(models_dir: Path) -> None:
    lean = LocalBackend(
        models_dir / "nodule-presence/model.onnx", OnnxRuntimeSettings(memory_arena=False)
    )
    assert lean.session.get_session_options().enable_cpu_mem_arena is False
    default = LocalBackend(models_dir / "nodule-presence/model.onnx", OnnxRuntimeSettings())
    assert default.session.get_session_options().enable_cpu_mem_arena is True
