"""The federated routes and answers match openapi/federated.yaml (sites and hub)."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
from starlette.routing import Mount

from hub.app import HubSettings, SiteSettings, hub_app
from tests.federated.conftest import QUERY_TOKEN, Site, SiteFactory
from tests.support.openapi import app_operations, assert_documented, load_spec

SPEC = load_spec("federated.yaml")


def _schema(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}


def test_site_routes_are_the_documented_ones(site: Site) -> None:
    routes = app_operations(
        [r for r in site.server.server.config.app.routes if isinstance(r, Mount)]
    )
    documented = {
        (m.upper(), "/federated/v1" + p) for p, item in SPEC["paths"].items() for m in item
    }
    assert routes == documented


def test_hub_routes_are_the_documented_ones() -> None:
    """The hub serves every path a site does (a hub can be a site of another hub)."""
    app = hub_app(HubSettings(sites=[SiteSettings(name="a", url="http://a/federated/v1")]))
    # The dashboard's pages are documented in openapi/dashboard.yaml (tests/ui).
    routes = {
        op
        for op in app_operations(list(app.routes))
        if op[1] != "/healthz" and not op[1].startswith("/ui")
    }
    paths = SPEC["paths"].items()
    assert routes == {(m.upper(), "/federated/v1" + p) for p, item in paths for m in item}


def test_answers_are_documented_and_match_their_schemas(make_site: SiteFactory) -> None:
    site = make_site(dp={"epsilon_per_query": 1.0, "epsilon_per_person": 1.0})
    responses = [
        site.get({"PatientSex": "F"}),
        site.get({"PatientAge": "91"}),
        site.get({"PatientSex": "F"}, token=QUERY_TOKEN),  # noisy
        site.get({"PatientSex": "M"}, token=QUERY_TOKEN),  # budget spent: 403
        site.get({"PatientID": "x"}),  # 400
        httpx.get(f"{site.url}/count"),  # 401
        site.post(
            {
                "level": "studies",
                "aggregate": {
                    "kind": "crosstab",
                    "rows": {"kind": "category", "name": "sex"},
                    "columns": {"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 20},
                },
            }
        ),
        site.post(
            {
                "cohort": {"attributes": {"PatientSex": "M"}},
                "aggregate": {"kind": "summary", "of": "age", "lower": 0, "upper": 100},
            }
        ),
        httpx.get(f"{site.url}/budget", headers={"Authorization": "Bearer query-token-for-tests"}),
        httpx.post(
            f"{site.url}/cost",
            json={"level": "studies"},
            headers={"Authorization": "Bearer query-token-for-tests"},
        ),
    ]
    assert {r.status_code for r in responses} == {200, 400, 401, 403}
    for response in responses:
        assert_documented(SPEC, _relative(response))
        path = response.request.url.path
        if response.status_code == 200 and not path.endswith(("/budget", "/cost")):
            jsonschema.validate(response.json(), _schema("Answer"))
        elif response.status_code != 200:
            jsonschema.validate(response.json(), _schema("Error"))


def test_documented_examples_are_valid_requests(site: Site) -> None:
    example = SPEC["paths"]["/aggregate"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]["nodules-over-8mm-by-age"]["value"]
    jsonschema.validate(example, _schema("AggregateRequest"))
    assert site.post(example).status_code == 200


class _Relative:
    """A response whose request path is relative to /federated/v1 (the document's root)."""

    def __init__(self, response: httpx.Response):
        self._response = response
        path = response.request.url.path.removeprefix("/federated/v1")
        self.request = httpx.Request(response.request.method, f"http://x{path}")
        self.status_code = response.status_code
        self.headers = response.headers
        self.content = response.content


def _relative(response: httpx.Response) -> Any:
    return _Relative(response)
