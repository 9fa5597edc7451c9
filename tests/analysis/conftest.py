"""A federated analysis at one site, with real processes: the gateway, an inference service that
may install models (the bundled ones, copied), Orthanc where the PACS matters.

The hub's side and the site's HTTP API for analyses are another part's work; here an analysis
arrives as the site API keeps it: its bundle written to ``data_dir/analyses/<sha256>/`` and
the analysis received and approved through :class:`gateway.analysis.store.AnalysisStore`.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from gateway.analysis.bundle import ModelBundle
from gateway.analysis.records import Analysis, Progress
from gateway.analysis.store import AnalysisStore
from gateway.queue import QueueSettings
from tests.pipeline.conftest import chest_rule, pipeline_settings, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess

INSTALL_TOKEN = "analysis-install-token"
#: The bundle the consortium sends: the bundled presence model (CT, at least 8 slices, any
#: body part), so that studies no clinical rule routes are in its cohort.
BUNDLE_MODEL = "nodule-presence"

__all__ = [
    "INSTALL_TOKEN",
    "SiteAnalysis",
    "abdomen_phantom",
    "site_settings",
    "wait_until",
]


@pytest.fixture(scope="module")
def installing_inference(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[InferenceProcess]:
    repository = tmp_path_factory.mktemp("analysis-repository") / "models"
    shutil.copytree(models_dir, repository)  # installed models stay out of the shared one
    process = InferenceProcess(
        tmp_path_factory.mktemp("analysis-inference"),
        repository,
        {"admin_token_sha256": hashlib.sha256(INSTALL_TOKEN.encode()).hexdigest()},
    ).start()
    try:
        yield process
    finally:
        process.stop()


def site_settings(inference_url: str, max_running: int = 1, **overrides: Any) -> dict[str, Any]:
    """A pipeline gateway whose clinical rule routes chest CTs, with the research lane."""
    settings = pipeline_settings(inference_url, **overrides)
    settings["routing"] = [chest_rule(inference_url)]
    settings["pipeline"] = {
        **settings["pipeline"],
        "research": {
            "max_running": max_running,
            "install_token": INSTALL_TOKEN,
            "poll_seconds": 0.5,
        },
    }
    return settings


def abdomen_phantom(seed: int) -> Phantom:
    """A tiny abdominal CT (no clinical rule routes it; the analysis's model takes it)."""
    return generate_phantom(
        PhantomSpec(
            seed=seed,
            rows=32,
            columns=32,
            slices=8,
            pixel_spacing_mm=8.0,
            slice_thickness_mm=5.0,
            lesion_diameters_mm=(),
            body_part="ABDOMEN",
            series_description="Abdomen CT phantom",
        )
    )


def store_studies(dicomweb_url: str, phantoms: list[Phantom]) -> None:
    client = DICOMwebClient(dicomweb_url)
    batch: list[Any] = []
    for phantom in phantoms:
        batch.extend(phantom.instances())
        if len(batch) >= 400:
            client.store_instances(batch)
            batch = []
    if batch:
        client.store_instances(batch)


class SiteAnalysis:
    """One analysis at a gateway, as the site's API keeps it (see the module)."""

    def __init__(self, gateway: GatewayProcess, models_dir: Path, cohort: dict[str, Any]):
        self.gateway = gateway
        self.bundle = ModelBundle.read(models_dir / BUNDLE_MODEL)
        self.analysis_id = secrets.token_hex(16)
        self.cohort = cohort

    def store(self) -> AnalysisStore:
        return AnalysisStore.open(QueueSettings(), self.gateway.data_dir)

    def with_store(self, action: Callable[[AnalysisStore], Any]) -> Any:
        store = self.store()
        try:
            return action(store)
        finally:
            store.close()

    def approve(self) -> Analysis:
        self.bundle.write(self.gateway.data_dir / "analyses" / self.bundle.sha256)
        analysis = Analysis(
            analysis_id=self.analysis_id,
            hub="consortium",
            bundle_sha256=self.bundle.sha256,
            model_name=self.bundle.name,
            model_version=self.bundle.version,
            cohort=self.cohort,
            validated=False,
            state="pending",
            received_at=time.time(),
        )

        def receive_and_approve(store: AnalysisStore) -> Analysis:
            store.receive(analysis)
            return store.set_state(self.analysis_id, "running", by="test admin")

        approved: Analysis = self.with_store(receive_and_approve)
        return approved

    def get(self) -> Analysis:
        analysis: Analysis = self.with_store(lambda store: store.get(self.analysis_id))
        return analysis

    def progress(self) -> Progress:
        progress: Progress = self.with_store(lambda store: store.progress(self.analysis_id))
        return progress

    def set_state(self, state: str) -> Analysis:
        changed: Analysis = self.with_store(
            lambda store: store.set_state(self.analysis_id, state, by="test admin")  # type: ignore[arg-type]
        )
        return changed

    def wait_selected(self, count: int, timeout: float = 60) -> Progress:
        progress: Progress = wait_until(
            lambda: (p := self.progress()).selected >= count and p,
            timeout,
            f"{count} series selected for the analysis",
        )
        return progress
