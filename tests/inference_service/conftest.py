"""Fixtures of the inference service tests: the bundled models, a module-wide Orthanc."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_service.repository import ModelRepository
from inference_service.settings import InferenceSettings
from tests.support.orthanc import OrthancServer


@pytest.fixture(scope="session")
def repository(models_dir: Path) -> ModelRepository:
    return ModelRepository.load(InferenceSettings(models_dir=models_dir))


@pytest.fixture(scope="module")
def shared_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """One Orthanc for a whole test module (each test stores its own studies)."""
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield server
    finally:
        server.stop()
