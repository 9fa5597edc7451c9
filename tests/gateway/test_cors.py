"""CORS for a viewer on another origin (``http.cors_origins``), at a real gateway with auth on:
what a browser checks in the preflight and in the answer (Fetch Standard, CORS protocol)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import GatewayProcess

TOKEN = "cors-viewer-token"
VIEWER = "https://viewer.example"
ELSEWHERE = "https://elsewhere.example"


def _gateway(tmp_path_factory: pytest.TempPathFactory, http: dict[str, object]) -> GatewayProcess:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return GatewayProcess(
        tmp_path_factory.mktemp("cors-gateway"),
        {
            "http": http,
            "auth": {"clients": [{"name": "viewer", "token_sha256": digest, "roles": ["admin"]}]},
        },
    ).start()


@pytest.fixture(scope="module")
def with_origins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = _gateway(tmp_path_factory, {"cors_origins": [VIEWER + "/"]})
    try:
        yield process
    finally:
        process.stop()


def _preflight(gateway: GatewayProcess, origin: str) -> httpx.Response:
    return httpx.options(
        f"{gateway.dicomweb_url}/studies",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, accept",
        },
    )


def test_preflight_of_a_configured_origin(with_origins: GatewayProcess) -> None:
    response = _preflight(with_origins, VIEWER)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == VIEWER
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE"} <= methods
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "accept", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in response.headers


def test_answers_to_a_configured_origin_are_readable(with_origins: GatewayProcess) -> None:
    headers = {"Origin": VIEWER, "Authorization": f"Bearer {TOKEN}"}
    response = httpx.get(f"{with_origins.dicomweb_url}/studies", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == VIEWER
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert "warning" in exposed
    # A refusal is readable too, so the viewer can say why (no token: 401).
    refused = httpx.get(f"{with_origins.dicomweb_url}/studies", headers={"Origin": VIEWER})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == VIEWER


def test_another_origin_gets_no_cors_headers(with_origins: GatewayProcess) -> None:
    preflight = _preflight(with_origins, ELSEWHERE)
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    headers = {"Origin": ELSEWHERE, "Authorization": f"Bearer {TOKEN}"}
    response = httpx.get(f"{with_origins.dicomweb_url}/studies", headers=headers)
    assert response.status_code == 200
    # What the browser checks: without Access-Control-Allow-Origin the page cannot read it.
    assert "access-control-allow-origin" not in response.headers


def test_no_origins_configured_no_cors_headers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gateway = _gateway(tmp_path_factory, {})
    try:
        preflight = _preflight(gateway, VIEWER)
        assert not [h for h in preflight.headers if h.startswith("access-control-")]
        assert preflight.status_code in (401, 405)  # not a CORS answer: no preflight passes
        headers = {"Origin": VIEWER, "Authorization": f"Bearer {TOKEN}"}
        response = httpx.get(f"{gateway.dicomweb_url}/studies", headers=headers)
        assert response.status_code == 200
        assert not [h for h in response.headers if h.startswith("access-control-")]
    finally:
        gateway.stop()
