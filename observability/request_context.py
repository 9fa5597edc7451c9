"""A request id on every log line of a request, and one access log line per request.

Plain ASGI (not BaseHTTPMiddleware), so streamed bodies (a STOW of gigabytes, an infer request
of hundreds of megabytes) pass untouched. A caller's ``X-Request-ID`` is kept (the gateway
sends its job's id to the inference service, the hub its question's id to the sites), so one
id traces a piece of work across services; structlog's context variables follow the request
into worker threads.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("http")

#: Told of every request when it ends: method, path, status, seconds (a latency histogram).
Observer = Callable[[str, str, int, float], None]


class RequestContextMiddleware:
    """Binds ``request_id`` to the request's log lines and answers it in ``X-Request-ID``;
    logs ``http.request`` once per request, except for ``quiet_paths`` (health checks and
    scrapes, polled every few seconds)."""

    def __init__(
        self,
        app: ASGIApp,
        quiet_paths: Collection[str] = (),
        observe: Observer | None = None,
    ) -> None:
        self.app = app
        self.quiet_paths = frozenset(quiet_paths)
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            path: str = scope["path"]
            if self.observe is not None:
                self.observe(scope["method"], path, status, elapsed)
            if path not in self.quiet_paths:
                log.info(
                    "http.request",
                    method=scope["method"],
                    path=path,
                    status=status,
                    seconds=round(elapsed, 4),
                )
