"""Shared fixtures: real Orthanc and gateway processes, phantom studies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from tests.support.inference import InferenceProcess, bundled_models, installing_inference
from tests.support.orthanc import OrthancServer
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled models, built once per test session into a temporary repository."""
    return bundled_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """A fresh Orthanc with the DICOMweb plugin, its own ports and storage."""
    server = OrthancServer(tmp_path / "orthanc").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def small_phantom() -> Phantom:
    """A small chest CT phantom (64x64x8, one 10 mm lesion): quick to send around."""
    return generate_phantom(
        PhantomSpec(
            seed=1,
            rows=64,
            columns=64,
            slices=8,
            pixel_spacing_mm=4.0,
            slice_thickness_mm=5.0,
            lesion_diameters_mm=(),
        )
    )


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (Debian package), one per test module."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def installing_inference_service(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[InferenceProcess]:
    """An inference service that installs models for the holder of ``INSTALL_TOKEN``
    (tests/support/inference.py), serving a copy of the bundled models."""
    process = installing_inference(tmp_path_factory.mktemp("installing-inference"), models_dir)
    process.start()
    try:
        yield process
    finally:
        process.stop()
