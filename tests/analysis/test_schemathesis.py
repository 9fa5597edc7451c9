"""Schemathesis over openapi/analysis.yaml against a real gateway: whatever a caller sends to
the analyses API (bodies that are not tars, odd ids, wrong media types) gets a documented
answer, never a 5xx, and nothing is kept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from schemathesis import APIOperation

from gateway.hub_assertion import write_key_pair
from tests.support.gateway import GatewayProcess
from tests.support.schemathesis import check_operation, operation_id, operations

ADMIN_TOKEN = "analyses-schemathesis-admin"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir: Path = tmp_path_factory.mktemp("analyses-schemathesis")
    _, public_key = write_key_pair(workdir / "keys")
    process = GatewayProcess(
        workdir,
        {
            "auth": {
                "clients": [
                    {
                        "name": "admin",
                        "token_sha256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
                        "roles": ["admin"],
                    }
                ],
                "hubs": [{"name": "hub", "public_key_file": str(public_key), "audience": "site"}],
            }
        },
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("operation", operations("analysis.yaml"), ids=operation_id)
def test_analyses_api_answers_as_documented(site: GatewayProcess, operation: APIOperation) -> None:
    seen: list[tuple[str, int]] = []
    check_operation(operation, f"{site.url}/federated/v1", ADMIN_TOKEN, seen=seen)
    assert seen and all(status < 500 for _, status in seen)
    listed = httpx.get(
        f"{site.url}/federated/v1/analyses", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert listed.status_code == 200 and listed.json() == {"analyses": []}
