"""The gateway's ASGI application: routes, middleware and the lifetime of its parts."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from gateway.auth import Authenticator
from gateway.dicomweb.errors import DicomWebError, dicomweb_error_handler
from gateway.dicomweb.routes import embedded_routes, upstream_routes
from gateway.forwarder import Forwarder
from gateway.middleware import AuthMiddleware, RequestContextMiddleware
from gateway.pacs import PacsClient
from gateway.settings import GatewaySettings
from gateway.store import EmbeddedStore, IngestPolicy

log = structlog.get_logger(__name__)

# Below this much free space in data_dir the gateway reports itself not ready.
MIN_FREE_BYTES = 512 * 1024 * 1024


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the store can be read and has room."""
    store: EmbeddedStore = request.app.state.store
    problems: dict[str, Any] = {}
    try:
        await anyio.to_thread.run_sync(store.catalog.counts)
    except Exception as error:  # any failure of the catalog makes us unready
        problems["catalog"] = str(error)
    free = shutil.disk_usage(store.layout.root).free
    if free < MIN_FREE_BYTES:
        problems["disk"] = f"only {free} bytes free in the data directory"
    status = 503 if problems else 200
    return JSONResponse({"status": "unready" if problems else "ready", **problems}, status)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: GatewaySettings) -> Starlette:
    """Build the gateway for ``settings``; parts open and close with the app's lifespan."""
    store = EmbeddedStore(
        settings.data_dir / "store",
        IngestPolicy(
            duplicates=settings.ingest.duplicates,
            sop_classes=frozenset(settings.ingest.sop_classes),
            forward_to_pacs=settings.ingest.forward_to_pacs and settings.pacs.url is not None,
        ),
    )
    pacs = PacsClient(settings.pacs) if settings.pacs.url else None
    dicomweb = upstream_routes() if pacs else embedded_routes()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if pacs is not None and store.policy.forward_to_pacs:
            forwarder = Forwarder(store, pacs)
            store.subscribe(lambda stored: forwarder.notify())
            tasks.append(asyncio.create_task(forwarder.run(), name="forwarder"))
        log.info(
            "gateway.started",
            data_dir=str(settings.data_dir),
            pacs=settings.pacs.url or "embedded store",
            auth="bearer tokens" if settings.auth.enabled else "off (loopback only)",
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if pacs is not None:
                await pacs.aclose()
            store.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Mount("/dicomweb", routes=dicomweb),
        ],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(AuthMiddleware, authenticator=Authenticator(settings.auth)),
        ],
        exception_handlers={DicomWebError: dicomweb_error_handler},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.pacs = pacs
    return app
