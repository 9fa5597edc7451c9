"""The gateway's routes and answers match openapi/gateway.yaml."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import phantom
from tests.support.dicom import multipart_body, part10_bytes
from tests.support.gateway import GatewayProcess
from tests.support.openapi import (
    app_operations,
    assert_documented,
    documented_operations,
    load_spec,
)

SPEC = load_spec("gateway.yaml")


def gateway_operations(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(GatewaySettings(data_dir=tmp_path))
    # The federated API and the dashboard's pages have documents of their own.
    return {
        op for op in app_operations(list(app.routes)) if not op[1].startswith(("/federated", "/ui"))
    }


def test_every_route_is_documented_and_every_documented_path_exists(tmp_path: Path) -> None:
    routes = gateway_operations(tmp_path)
    documented = documented_operations(SPEC)
    assert routes - documented == set(), "routes missing from openapi/gateway.yaml"
    assert documented - routes == set(), "documented operations the gateway does not serve"


def test_answers_are_the_documented_ones(gateway: GatewayProcess) -> None:
    dataset = next(phantom(seed=500).instances())
    body, content_type = multipart_body([part10_bytes(dataset)])
    base = gateway.dicomweb_url
    instance = (
        f"{base}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
        f"/instances/{dataset.SOPInstanceUID}"
    )
    calls = [
        httpx.post(f"{base}/studies", content=body, headers={"Content-Type": content_type}),
        httpx.post(f"{base}/studies", content=body, headers={"Content-Type": content_type}),
        httpx.post(f"{base}/studies", content=b"x", headers={"Content-Type": "text/plain"}),
        httpx.post(f"{base}/studies/1.2.3", content=body, headers={"Content-Type": content_type}),
        httpx.get(f"{base}/studies", params={"PatientID": dataset.PatientID}),
        httpx.get(f"{base}/studies", params={"Bogus": "1"}),
        httpx.get(f"{base}/series"),
        httpx.get(f"{base}/instances", params={"limit": "1"}),
        httpx.get(f"{base}/studies/{dataset.StudyInstanceUID}"),
        httpx.get(f"{base}/studies/{dataset.StudyInstanceUID}/metadata"),
        httpx.get(f"{instance}/frames/1"),
        httpx.get(f"{instance}/frames/9"),
        httpx.get(f"{instance}/bulkdata/7FE00010"),
        httpx.get(f"{base}/studies/1.2.3"),
        httpx.get(gateway.url + "/healthz"),
        httpx.get(gateway.url + "/readyz"),
        httpx.get(gateway.url + "/metrics"),
    ]
    assert {c.status_code for c in calls} >= {200, 400, 404, 409, 415}
    for response in calls:
        assert_documented(SPEC, response)


@pytest.mark.parametrize("name", ["gateway.yaml"])
def test_document_is_valid_openapi_31(name: str) -> None:
    assert load_spec(name)["openapi"] == "3.1.0"
