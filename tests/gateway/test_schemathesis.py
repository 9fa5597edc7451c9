"""Schemathesis over openapi/gateway.yaml against a real gateway with auth configured (so the
job endpoints answer) and a study stored: no 5xx, every answer as documented."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from schemathesis import APIOperation

from tests.gateway.conftest import phantom
from tests.support.dicom import multipart_body, part10_bytes
from tests.support.gateway import GatewayProcess
from tests.support.schemathesis import check_operation, operation_id, operations

ADMIN_TOKEN = "schemathesis-admin-token"


@pytest.fixture(scope="module")
def authenticated_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    digest = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    process = GatewayProcess(
        tmp_path_factory.mktemp("schemathesis-gateway"),
        {"auth": {"clients": [{"name": "st", "token_sha256": digest, "roles": ["admin"]}]}},
    ).start()
    try:
        dataset = next(phantom(seed=720, slices=1).instances())
        body, content_type = multipart_body([part10_bytes(dataset)])
        stored = httpx.post(
            f"{process.dicomweb_url}/studies",
            content=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert stored.status_code == 200, stored.text
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("operation", operations("gateway.yaml"), ids=operation_id)
def test_gateway_answers_as_documented(
    authenticated_gateway: GatewayProcess, operation: APIOperation
) -> None:
    check_operation(operation, authenticated_gateway.url, ADMIN_TOKEN)
