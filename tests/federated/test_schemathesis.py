"""Schemathesis over openapi/federated.yaml against a real gateway process whose findings
index holds the standard synthetic cohort, with a query client configured: no 5xx, every
answer as documented, and successful counts and aggregates among them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from schemathesis import APIOperation

from gateway.index import FindingsIndex, IndexSettings
from tests.federated.conftest import QUERY_TOKEN, sha256, standard_cohort
from tests.federated.synthetic import DIAMETER, write_patients
from tests.support.gateway import GatewayProcess
from tests.support.schemathesis import check_operation, operation_id, operations

#: Operations whose run must include successful answers, not only refusals.
ANSWERED = {"GET /count", "POST /aggregate", "POST /cost", "GET /budget", "GET /vocabulary"}


@pytest.fixture(scope="module")
def site_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("schemathesis-site")
    index = FindingsIndex.open(IndexSettings(), workdir / "data")
    write_patients(index, standard_cohort())
    index.close()
    process = GatewayProcess(
        workdir,
        {
            "auth": {
                "clients": [
                    {"name": "researcher", "token_sha256": sha256(QUERY_TOKEN), "roles": ["query"]}
                ]
            },
            # Every generated question is a fresh noisy answer: a budget for thousands of them,
            # else most would be a (documented) 403 and the answers' schema left untried.
            "federated": {
                "dp": {"epsilon_per_person": 1e9, "epsilon_per_site": 1e9},
                "audit_fsync": False,
            },
        },
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("operation", operations("federated.yaml"), ids=operation_id)
def test_federated_api_answers_as_documented(
    site_gateway: GatewayProcess, operation: APIOperation
) -> None:
    seen: list[tuple[str, int]] = []
    check_operation(operation, f"{site_gateway.url}/federated/v1", QUERY_TOKEN, seen=seen)
    statuses = [status for _, status in seen]
    assert operation.label not in ANSWERED or 200 in statuses, (
        f"no successful answer among {len(statuses)}: {sorted(set(statuses))}"
    )


def test_refusals_by_the_gateway_are_json_as_documented(site_gateway: GatewayProcess) -> None:
    """The gateway's own authentication answers the federated API's 401 in its error form."""
    response = httpx.get(f"{site_gateway.url}/federated/v1/count")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith("authentication required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_boolean_is_not_a_number(site_gateway: GatewayProcess) -> None:
    finding = {"measurements": [{"concept": DIAMETER, "min": False, "unit": "mm"}]}
    response = httpx.post(
        f"{site_gateway.url}/federated/v1/aggregate",
        json={"cohort": {"findings": [finding]}},
        headers={"Authorization": f"Bearer {QUERY_TOKEN}"},
    )
    assert response.status_code == 400
    assert response.json()["field"] == "cohort.findings.0.measurements.0.min"
