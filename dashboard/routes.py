"""The routes of ``/ui``: the pages, their static files, and a small ``config.json``.

The pages are plain HTML and ES modules with no build step (docs/dashboard.md says why); the
chart library (Vega, Vega-Lite, vega-embed) comes from npm through
``scripts/setup.d/40-dashboard.sh`` into the git-ignored ``static/vendor``. Without it the app
still starts and the builder still counts: the pages say that charts need ``scripts/setup.sh``,
and a warning is logged at start.

Nothing here reads data: the pages hold no data until the browser asks the API with the user's
token, so ``/ui`` itself needs no credential (the login form is one of its pages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from dashboard.oidc import OidcDiscovery, OidcLogin

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
#: The browser builds the charts need (UMD bundles that define ``vega``, ``vegaLite`` and
#: ``vegaEmbed``), in the order the pages load them.
VENDOR_FILES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")

DashboardKind = Literal["site", "hub"]

#: Same origin only: no CDN can be reached even by mistake, and no page can be framed. Vega
#: compiles its expressions with ``Function`` (hence 'unsafe-eval'); no inline script runs.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    # The token is never in a URL, and nothing is sent to another site as a referrer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def security_headers(connect_origins: list[str]) -> dict[str, str]:
    """:data:`SECURITY_HEADERS`, with ``connect-src`` also naming ``connect_origins`` (the
    OpenID provider's token endpoint, which the sign-in page posts the code to)."""
    if not connect_origins:
        return SECURITY_HEADERS
    policy = SECURITY_HEADERS["Content-Security-Policy"].replace(
        "connect-src 'self'", " ".join(["connect-src 'self'", *connect_origins])
    )
    return {**SECURITY_HEADERS, "Content-Security-Policy": policy}


def missing_vendor_files(vendor_dir: Path = VENDOR_DIR) -> list[str]:
    """The chart library's files that are not installed (empty when charts can be drawn)."""
    return [name for name in VENDOR_FILES if not (vendor_dir / name).is_file()]


class _SecuredStatic(StaticFiles):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def dashboard_routes(
    kind: DashboardKind,
    *,
    auth_enabled: bool,
    oidc_configured: bool = False,
    oidc_login: OidcLogin | None = None,
) -> list[BaseRoute]:
    """The routes to serve at the root of the app: ``/ui`` and everything under it.

    ``kind`` says whose data the pages show: a site's own (``site``, with the jobs page) or
    every site of a hub (``hub``: a column per site). ``oidc_login``: the dashboard's public
    client at the OpenID provider, for "Sign in with <provider>" (:mod:`dashboard.oidc`).
    """
    missing = missing_vendor_files()
    if missing:
        log.warning(
            "dashboard.assets_missing",
            missing=missing,
            hint="run scripts/setup.sh (scripts/setup.d/40-dashboard.sh): /ui counts, "
            "but draws no chart",
        )
    config = {
        "kind": kind,
        "api": "/federated/v1",
        "jobs": "/jobs" if kind == "site" else None,
        "auth": auth_enabled,
        # OIDC: the login form takes an access token from the identity provider (a JWT is a
        # bearer token like any other), and with ``oidc_login`` the page signs in by redirect.
        "oidc": oidc_configured or oidc_login is not None,
        "charts": not missing,
        "missing_assets": missing,
    }

    discovery = OidcDiscovery(oidc_login) if oidc_login is not None else None

    async def headers() -> dict[str, str]:
        return security_headers(await discovery.connect_origins() if discovery else [])

    async def page(request: Request) -> Response:
        name = "jobs.html" if request.url.path.rstrip("/").endswith("/jobs") else "index.html"
        if name == "jobs.html" and kind != "site":
            return JSONResponse({"error": "the hub has no jobs page"}, status_code=404)
        return FileResponse(STATIC_DIR / name, headers=await headers())

    async def config_json(request: Request) -> Response:
        login = await discovery.page_config() if discovery else None
        return JSONResponse({**config, "oidc_login": login}, headers=await headers())

    async def to_slash(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=308)

    return [
        Route("/ui", to_slash, methods=["GET", "HEAD"]),
        Mount(
            "/ui",
            routes=[
                Route("/", page, methods=["GET", "HEAD"]),
                Route("/jobs", page, methods=["GET", "HEAD"]),
                Route("/config.json", config_json, methods=["GET"]),
                Mount("/static", app=_SecuredStatic(directory=STATIC_DIR), name="dashboard"),
            ],
        ),
    ]
