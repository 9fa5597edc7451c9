"""Real processes for the pipeline: a gateway, the inference service with the bundled models,
Orthanc as the hospital's PACS, PostgreSQL for the shared queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.waiting import wait_until

__all__ = [
    "chest_phantom",
    "chest_rule",
    "finished_jobs",
    "jobs",
    "pipeline_settings",
    "wait_until",
]


@pytest.fixture(scope="module")
def inference(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[InferenceProcess]:
    process = InferenceProcess(tmp_path_factory.mktemp("inference"), models_dir).start()
    try:
        yield process
    finally:
        process.stop()


def chest_rule(inference_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "chest-ct",
        "match": {"Modality": "CT", "BodyPartExamined": "CHEST"},
        "models": ["nodule-detector"],
        "inference_url": inference_url,
        **extra,
    }


def pipeline_settings(inference_url: str, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "pipeline": {"stable_after_seconds": 1, "workers": 2},
        "routing": [chest_rule(inference_url)],
        "queue": {"lease_seconds": 10, "backoff_seconds": 0.5, "backoff_max_seconds": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return settings


@pytest.fixture
def pipeline_gateway(tmp_path: Path, inference: InferenceProcess) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path / "gateway", pipeline_settings(inference.url)).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def chest_phantom(seed: int, lesions: tuple[float, ...] = (20.0,), **spec: Any) -> Phantom:
    """128x128x40 at 1.5 mm x 2 mm: quick through the whole pipeline, lesions measured well."""
    values: dict[str, Any] = {
        "rows": 128,
        "columns": 128,
        "slices": 40,
        "pixel_spacing_mm": 1.5,
        "slice_thickness_mm": 2.0,
        "lesion_diameters_mm": lesions,
        **spec,
    }
    return generate_phantom(PhantomSpec(seed=seed, **values))


def jobs(gateway: GatewayProcess, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(gateway.url + "/jobs", params={"limit": "1000", **params}, timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["jobs"]
    return result


def finished_jobs(
    gateway: GatewayProcess, count: int, **params: str
) -> list[dict[str, Any]] | None:
    current = jobs(gateway, **params)
    done = [j for j in current if j["state"] in ("succeeded", "failed", "dead")]
    return current if len(done) >= count and len(done) == len(current) else None
