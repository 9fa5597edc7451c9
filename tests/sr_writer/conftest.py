"""Fixtures for the sr_writer tests: a small chest CT phantom with two lesions."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom


@pytest.fixture(scope="session")
def lesion_phantom() -> Phantom:
    """128x128x24, 2 mm pixels, 3 mm slices, lesions of 12.3 mm and 8 mm (one per lung)."""
    return generate_phantom(
        PhantomSpec(
            seed=3,
            rows=128,
            columns=128,
            slices=24,
            pixel_spacing_mm=2.0,
            slice_thickness_mm=3.0,
            lesion_diameters_mm=(12.3, 8.0),
        )
    )


@pytest.fixture(scope="session")
def phantom_datasets(lesion_phantom: Phantom) -> list[Dataset]:
    return list(lesion_phantom.instances())


@pytest.fixture(scope="session")
def header_only(phantom_datasets: list[Dataset]) -> list[Dataset]:
    """The evidence as the inference service has it: read with stop_before_pixels."""
    headers = []
    for dataset in phantom_datasets:
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        headers.append(pydicom.dcmread(buffer, stop_before_pixels=True))
    assert all("PixelData" not in header for header in headers)
    return headers
