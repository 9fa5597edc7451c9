"""Bearer-token clients with roles; no auth means loopback only."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.gateway.conftest import phantom
from tests.support.gateway import GatewayProcess

ADMIN_TOKEN = "admin-secret-token"
QUERY_TOKEN = "query-secret-token"
SCRAPE_TOKEN = "prometheus-scrape-token"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        tmp_path_factory.mktemp("secured"),
        {
            "auth": {
                "clients": [
                    {"name": "pacs-admin", "token_sha256": digest(ADMIN_TOKEN), "roles": ["admin"]},
                    {"name": "hub", "token_sha256": digest(QUERY_TOKEN), "roles": ["query"]},
                    {
                        "name": "prometheus",
                        "token_sha256": digest(SCRAPE_TOKEN),
                        "roles": ["metrics"],
                    },
                ]
            }
        },
    ).start()
    try:
        yield process
    finally:
        process.stop()


def test_no_token_is_401(secured: GatewayProcess) -> None:
    response = httpx.get(secured.dicomweb_url + "/studies")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        httpx.get(
            secured.dicomweb_url + "/studies", headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )


def test_query_role_cannot_reach_dicomweb(secured: GatewayProcess) -> None:
    response = httpx.get(
        secured.dicomweb_url + "/studies", headers={"Authorization": f"Bearer {QUERY_TOKEN}"}
    )
    assert response.status_code == 403


def test_admin_token_stores_and_searches(secured: GatewayProcess) -> None:
    client = DICOMwebClient(
        secured.dicomweb_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    dataset = next(phantom(seed=300).instances())
    client.store_instances([dataset])
    found = client.search_for_instances(search_filters={"SOPInstanceUID": dataset.SOPInstanceUID})
    assert len(found) == 1


def test_health_needs_no_token(secured: GatewayProcess) -> None:
    assert httpx.get(secured.url + "/healthz").status_code == 200
    assert httpx.get(secured.url + "/readyz").json()["status"] == "ready"


def _metrics(gateway: GatewayProcess, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(gateway.url + "/metrics", headers=headers)


def test_metrics_need_the_metrics_role_when_auth_is_on(secured: GatewayProcess) -> None:
    # Issue 13 item 8: /metrics shows every arrival and each client's federated activity.
    anonymous = _metrics(secured, None)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert "fedgate_" not in anonymous.text
    assert _metrics(secured, "not-a-token").status_code == 401
    refused = _metrics(secured, QUERY_TOKEN)
    assert refused.status_code == 403
    assert "metrics" in refused.text
    for token in (SCRAPE_TOKEN, ADMIN_TOKEN):
        scraped = _metrics(secured, token)
        assert scraped.status_code == 200
        assert "fedgate_http_request_duration_seconds" in scraped.text
    # The scrape credential opens nothing else.
    scrape = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    assert httpx.get(secured.dicomweb_url + "/studies", headers=scrape).status_code == 403
    assert httpx.get(secured.url + "/federated/v1/budget", headers=scrape).status_code == 403


def test_without_auth_the_gateway_listens_on_loopback_only(tmp_path: Path) -> None:
    # Asked to listen on every interface without auth, it must bind 127.0.0.1 only.
    process = GatewayProcess(tmp_path, {}, host="0.0.0.0").start()
    try:
        assert "auth.disabled_loopback_only" in process.log()
        listening = Path("/proc/net/tcp").read_text()
        port_hex = f"{process.port:04X}"
        local = [line.split()[1] for line in listening.splitlines()[1:]]
        assert f"0100007F:{port_hex}" in local  # 127.0.0.1
        assert f"00000000:{port_hex}" not in local  # not 0.0.0.0
        # Loopback only, so a scraper on the same host needs no token.
        assert httpx.get(process.url + "/metrics").status_code == 200
    finally:
        process.stop()
