"""405 Method Not Allowed with the resource's whole ``Allow`` list (RFC 9110 15.5.6, 10.2.1).

Starlette answers 405 from the first route whose path matches, so its ``Allow`` names only
that route's methods: ``/dicomweb/studies`` (a POST route for STOW-RS, a GET route for
QIDO-RS) said ``Allow: POST``. Here the list is every method of every route, mounted ones
included, whose path matches the request's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route


def allowed_methods(routes: Iterable[BaseRoute], scope: dict[str, Any]) -> set[str]:
    """The methods of the routes (searched through mounts) whose path matches ``scope``."""
    methods: set[str] = set()
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            methods |= allowed_methods(route.routes, {**scope, **child_scope})
        elif isinstance(route, Route):
            methods |= set(route.methods or ())
    return methods


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's HTTPException answer, with a 405's ``Allow`` made complete."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # A fresh scope from the application's root: the one here was narrowed by the mounts.
        root_scope = {
            "type": "http",
            "method": request.method,
            "path": request.scope["path"],
            "root_path": request.scope.get("app_root_path", request.scope.get("root_path", "")),
        }
        methods = allowed_methods(request.app.routes, root_scope) or set(
            headers.get("Allow", "").replace(" ", "").split(",")
        )
        headers["Allow"] = ", ".join(sorted(m for m in methods if m))
        text = f"method {request.method} is not allowed here; allowed: {headers['Allow']}\n"
        return PlainTextResponse(text, status_code=405, headers=headers)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=headers)
