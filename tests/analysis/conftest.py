"""A federated analysis at one site, with real processes: the gateway, an inference service that
may install models (the bundled ones, copied), Orthanc where the PACS matters.

An analysis arrives as the site's API keeps it (:class:`tests.support.analysis.SiteAnalysis`).
"""

from __future__ import annotations

from typing import Any

from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from tests.pipeline.conftest import chest_rule, pipeline_settings, wait_until
from tests.support.inference import INSTALL_TOKEN

#: The bundle the consortium sends: the bundled presence model (CT, at least 8 slices, any
#: body part), so that studies no clinical rule routes are in its cohort.
BUNDLE_MODEL = "nodule-presence"

__all__ = [
    "INSTALL_TOKEN",
    "abdomen_phantom",
    "site_settings",
    "wait_until",
]


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
