"""The dashboard's routes are the documented ones (openapi/dashboard.yaml), at a site's gateway
and at the hub; the pages need no token, the data behind them does; the app starts and says so
when the chart library is missing."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.testclient import TestClient

from dashboard import dashboard_routes, missing_vendor_files
from hub.app import HubSettings, SiteSettings, hub_app
from tests.support.gateway import GatewayProcess
from tests.support.openapi import app_operations, load_spec
from tests.ui.conftest import ensure_dashboard_assets

SPEC = load_spec("dashboard.yaml")
DOCUMENTED = {
    (method.upper(), path)
    for path, item in SPEC["paths"].items()
    for method in item
    if path != "/ui/static/{path}"  # a static-files mount, not a route
}


def test_the_site_and_hub_routes_are_the_documented_ones() -> None:
    site = {op for op in app_operations(dashboard_routes("site", auth_enabled=True))}
    assert site == DOCUMENTED
    hub = hub_app(HubSettings(sites=[SiteSettings(name="a", url="http://a/federated/v1")]))
    assert {op for op in app_operations(list(hub.routes)) if op[1].startswith("/ui")} == (
        DOCUMENTED
    )
    with TestClient(hub) as client:
        assert client.get("/ui/jobs").status_code == 404
        assert client.get("/ui/config.json").json()["kind"] == "hub"


def test_a_gateway_with_auth_serves_the_pages_without_a_token_and_data_only_with_one(
    tmp_path: Path,
) -> None:
    ensure_dashboard_assets()
    gateway = GatewayProcess(
        tmp_path,
        {"auth": {"clients": [{"name": "a", "token_sha256": "0" * 64, "roles": ["query"]}]}},
    ).start()
    try:
        page = httpx.get(f"{gateway.url}/ui/", timeout=10)
        assert page.status_code == 200 and "Cohort builder" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        config = httpx.get(f"{gateway.url}/ui/config.json", timeout=10).json()
        assert config["kind"] == "site" and config["auth"] is True and config["charts"] is True
        script = httpx.get(f"{gateway.url}/ui/static/vendor/vega-embed.min.js", timeout=10)
        assert script.status_code == 200 and "vegaEmbed" in script.text
        # The data is not: the API still wants a token, and /ui opens no other path.
        assert httpx.get(f"{gateway.url}/federated/v1/budget", timeout=10).status_code == 401
        assert httpx.get(f"{gateway.url}/jobs", timeout=10).status_code == 401
        assert httpx.get(f"{gateway.url}/ui/../jobs", timeout=10).status_code == 401
    finally:
        gateway.stop()


def test_without_the_chart_library_the_app_starts_and_the_page_says_so(
    tmp_path: Path, monkeypatch: object
) -> None:
    import dashboard.routes as routes

    assert missing_vendor_files(tmp_path) == [
        "vega.min.js",
        "vega-lite.min.js",
        "vega-embed.min.js",
    ]
    monkeypatch.setattr(routes, "missing_vendor_files", lambda: ["vega.min.js"])  # type: ignore[attr-defined]
    app = Starlette(routes=dashboard_routes("site", auth_enabled=False))
    with TestClient(app) as client:
        config = client.get("/ui/config.json").json()
    assert config["charts"] is False and config["missing_assets"] == ["vega.min.js"]
