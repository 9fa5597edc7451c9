"""ASGI middleware: request ids, access logs, latency metrics, and who may call what.

Written as plain ASGI (not BaseHTTPMiddleware) so request and response bodies stream through
untouched: STOW-RS bodies of gigabytes pass here chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import (
    CHALLENGE,
    ON_BEHALF_OF_HEADER,
    Authenticator,
    Denied,
    Role,
)
from gateway.compression import SelectiveGZip
from gateway.metrics import REQUEST_LATENCY
from observability import RequestContextMiddleware

#: Paths anyone may call (liveness and readiness probes).
PUBLIC_PATHS = ("/healthz", "/readyz", "/ui")
#: Path prefixes anyone may call: the dashboard's pages and static files, which hold no data
#: (its login form is one of them); the data they show comes from the API with the user's token.
PUBLIC_PREFIXES = ("/ui/",)
#: Paths called every few seconds by machines: not written to the access log.
QUIET_PATHS = (*PUBLIC_PATHS, "/metrics")
FEDERATED_PREFIX = "/federated/"
#: HTTP methods that only read (RFC 9110 9.2.1: safe); HEAD is what Starlette adds to GET.
READ_METHODS = frozenset({"GET", "HEAD"})
ANY_METHOD: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RouteRule:
    """Requests with one of ``methods`` (any, if empty) to ``prefix`` need one of ``roles``.

    ``prefix`` matches whole path segments: ``/dicomweb/studies`` matches itself and
    ``/dicomweb/studies/1.2.3``, not ``/dicomweb/studiesx``.
    """

    methods: frozenset[str]
    prefix: str
    roles: tuple[Role, ...]

    def matches(self, method: str, path: str) -> bool:
        prefix = self.prefix.rstrip("/")
        return (not self.methods or method in self.methods) and (
            path == prefix or path.startswith(prefix + "/")
        )


#: Who may call what, by method and path prefix (docs/roles.md); the first match wins, and a
#: request no rule matches needs ``admin``. ``admin`` may call anything (``Principal.has``).
#:
#: - The federated API checks its roles itself (no role here: any authenticated caller reaches
#:   it), so that it can write a refusal to its audit log too.
#: - ``/metrics`` shows every arrival and each client's federated activity: only a scrape
#:   credential (``metrics``) or an administrator may read it (issue 13, item 8).
#: - ``forwarder`` may store (STOW-RS) and nothing else: a PACS's forwarding script holds this
#:   token on the PACS host, where it should open no images (issue 18, item 6).
#: - ``viewer`` may search and retrieve (QIDO-RS, WADO-RS): an image viewer such as OHIF.
ROUTE_RULES: tuple[RouteRule, ...] = (
    RouteRule(ANY_METHOD, FEDERATED_PREFIX, ()),
    RouteRule(READ_METHODS, "/metrics", ("metrics",)),
    RouteRule(frozenset({"POST"}), "/dicomweb/studies", ("forwarder",)),
    RouteRule(READ_METHODS, "/dicomweb", ("viewer",)),
)
#: The role a request no rule matches needs.
DEFAULT_ROLES: tuple[Role, ...] = ("admin",)


def roles_needed(method: str, path: str) -> tuple[Role, ...]:
    """The roles (any one of them, or ``admin``) a request needs; ``()``: checked further in."""
    return next((rule.roles for rule in ROUTE_RULES if rule.matches(method, path)), DEFAULT_ROLES)


#: Answers never compressed: DICOM instances, frames and bulk data (multipart or single part)
#: are mostly pixel data, often already compressed; gzip would cost CPU for little and would
#: hold each streamed part in the compressor. DICOM JSON (QIDO-RS, metadata), the job and
#: federated APIs and error texts are compressed, and compress ~10x.
UNCOMPRESSED_CONTENT_TYPES = (
    "text/event-stream",  # server-sent events: each event must reach the client at once
    "multipart/*",
    "application/dicom",
    "application/octet-stream",
    "image/*",
)


def compression() -> Middleware:
    """gzip (RFC 9110 8.4.1.3) for a client that sends ``Accept-Encoding: gzip``.

    A streamed answer is compressed chunk by chunk (each chunk flushed), so a streamed
    metadata answer is not buffered; answers under 1 KiB are sent as they are.
    """
    return Middleware(
        SelectiveGZip,
        excluded=UNCOMPRESSED_CONTENT_TYPES,
        minimum_size=1024,
        compresslevel=6,  # zlib's default: level 9 costs about twice the CPU for ~2% less
    )


def _route_label(path: str) -> str:
    """A low-cardinality label for metrics: the path with UIDs and numbers folded."""
    parts = []
    for segment in path.split("/"):
        parts.append("{uid}" if segment[:1].isdigit() else segment)
    return "/".join(parts)[:100]


def request_context() -> Middleware:
    """Request ids and access lines (:mod:`observability`), and each request's latency in
    ``fedgate_http_request_duration_seconds``."""
    return Middleware(RequestContextMiddleware, quiet_paths=QUIET_PATHS, observe=_observe_latency)


def _observe_latency(method: str, path: str, status: int, seconds: float) -> None:
    REQUEST_LATENCY.labels(method, _route_label(path), str(status)).observe(seconds)


def _refusal(
    path: str, reason: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    """A 401/403 in the media type of the API asked: the federated API answers its errors as
    JSON ``{"error": ...}`` (openapi/federated.yaml), DICOMweb and the rest as plain text."""
    if path.startswith(FEDERATED_PREFIX):
        return JSONResponse({"error": reason}, status_code=status, headers=headers)
    return PlainTextResponse(reason + "\n", status_code=status, headers=headers)


class AuthMiddleware:
    """Bearer-token authentication and role checks in front of every endpoint."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator):
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in PUBLIC_PATHS
            or scope["path"].startswith(PUBLIC_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        state = scope.setdefault("state", {})
        principal = self.authenticator.identify(
            headers.get("authorization"), headers.get(ON_BEHALF_OF_HEADER), state
        )
        if isinstance(principal, Denied):
            response = _refusal(
                path,
                principal.reason,
                principal.status,
                headers=CHALLENGE if principal.status == 401 else None,
            )
            await response(scope, receive, send)
            return
        needed = roles_needed(scope["method"], path)
        if needed and not any(principal.has(role) for role in needed):
            roles = " or ".join(repr(role) for role in dict.fromkeys((*needed, "admin")))
            reason = f"{scope['method']} {path} needs the {roles} role (docs/roles.md)"
            await _refusal(path, reason, 403)(scope, receive, send)
            return
        state["principal"] = principal
        structlog.contextvars.bind_contextvars(client=principal.name, person=principal.person)
        await self.app(scope, receive, send)
