"""The gateway's ASGI application: routes, middleware and the lifetime of its parts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio.to_thread
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router

from dashboard import dashboard_routes
from gateway.allow import http_exception_handler
from gateway.analysis.api import analysis_routes
from gateway.analysis.runner import AnalysisRunner
from gateway.analysis.store import AnalysisStore
from gateway.approvals import Approvals
from gateway.approvals_api import approval_routes
from gateway.auth import Authenticator
from gateway.cors import cors
from gateway.database_health import DatabaseHealth, configured_databases
from gateway.database_wait import DatabaseDisconnected
from gateway.dicomweb.errors import DicomWebError, dicomweb_error_handler, warning_header
from gateway.dicomweb.routes import (
    embedded_routes,
    read_routes,
    research_results_routes,
    results_routes,
    upstream_routes,
)
from gateway.dicomweb.sources import SourceChooser
from gateway.dicomweb.stores import WithStore
from gateway.dicomweb.wado import keep_series_metadata
from gateway.federated.api import federated_routes
from gateway.forwarder import Forwarder
from gateway.index import FindingsIndex
from gateway.intake.dimse import DimseIntake
from gateway.intake.poller import PacsPoller
from gateway.jobs_api import job_routes
from gateway.metrics import (
    DATA_DIR_FREE_BYTES,
    DATA_DIR_USED_BYTES,
    INDEX_COPY_READY,
    STORE_BYTES,
    STORE_UNOBSERVED,
)
from gateway.middleware import AuthMiddleware, compression, request_context
from gateway.pacs import PacsClient
from gateway.pipeline.retention import Retention
from gateway.pipeline.scheduler import StabilityScheduler
from gateway.pipeline.served_models import check_served_models
from gateway.pipeline.worker import JobWorker
from gateway.queue import Database, JobQueue, StabilityLedger
from gateway.settings import GatewaySettings
from gateway.store import EmbeddedStore, IngestPolicy, StoredInstance
from gateway.store.redelivery import redeliver_unobserved

log = structlog.get_logger(__name__)

# Below this much free space in data_dir the gateway reports itself not ready.
MIN_FREE_BYTES = 512 * 1024 * 1024


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the store can be read and has room, and the PostgreSQL database(s) of the
    index and the queue answer (a cached ``SELECT 1``: see :mod:`gateway.database_health`)."""
    store: EmbeddedStore = request.app.state.store
    problems: dict[str, Any] = {}
    database = await anyio.to_thread.run_sync(request.app.state.database_health.problem)
    if database is not None:
        problems["database"] = database
    try:
        await anyio.to_thread.run_sync(store.catalog.counts)
    except Exception as error:  # any failure of the catalog makes us unready
        problems["catalog"] = str(error)
    free = shutil.disk_usage(store.layout.root).free
    if free < MIN_FREE_BYTES:
        problems["disk"] = f"only {free} bytes free in the data directory"
    status = 503 if problems else 200
    return JSONResponse({"status": "unready" if problems else "ready", **problems}, status)


async def database_disconnected_handler(request: Request, exc: Exception) -> Response:
    """A request whose index or queue transaction lost its connection (a database restart):
    rolled back, nothing half-written; 503 with the reason, and the client retries (the next
    use reconnects), never a 500."""
    log.warning("database.disconnected", path=request.url.path, reason=str(exc))
    return JSONResponse(
        {"status": "unavailable", "database": str(exc)},
        503,
        headers={"Retry-After": "5", "Warning": warning_header(str(exc))},
    )


async def metrics(request: Request) -> Response:
    # In a thread: collecting reads the catalog's stored bytes (a scan of the instances table,
    # at most once a minute), 20 s with a cold cache at 10,000,000 instances (issue 19), which
    # on the event loop would stall every request meanwhile.
    return Response(await run_in_threadpool(generate_latest), media_type=CONTENT_TYPE_LATEST)


def own_url(settings: GatewaySettings) -> str:
    """The gateway's root URL for its own callers (the inference service, replicas)."""
    if settings.listen.public_url:
        return settings.listen.public_url.rstrip("/")
    host = settings.listen.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    return f"{scheme(settings)}://{host}:{settings.listen.port}"


def scheme(settings: GatewaySettings) -> str:
    """``https`` when the gateway serves TLS itself (``listen.tls``), else ``http``."""
    return "https" if settings.listen.tls else "http"


def _client_certificates(settings: GatewaySettings) -> str:
    tls = settings.listen.tls
    if tls is None or tls.client_ca is None:
        return "not asked"
    return "required" if tls.require_client_certificate else "optional"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def gateway_id(settings: GatewaySettings) -> str:
    return settings.pipeline.gateway_id or f"{socket.gethostname()}:{settings.data_dir.resolve()}"


#: The store's size is a table scan: measured at most this often, however often it is scraped.
STORE_SIZE_MAX_AGE_SECONDS = 60.0


def measure_disk(store: EmbeddedStore) -> None:
    """Have ``/metrics`` report data_dir's filesystem and the store's size when scraped."""
    root = store.layout.root
    measured: list[float] = []  # [when, bytes], once measured

    def free() -> float:
        return float(shutil.disk_usage(root).free)

    def used() -> float:
        return float(shutil.disk_usage(root).used)

    def store_bytes() -> float:
        now = time.monotonic()
        if not measured or now - measured[0] > STORE_SIZE_MAX_AGE_SECONDS:
            try:
                measured[:] = [now, float(store.catalog.stored_bytes())]
            except Exception:  # a closed or busy catalog: the scrape still answers
                return float("nan")
        return measured[1]

    DATA_DIR_FREE_BYTES.set_function(free)
    DATA_DIR_USED_BYTES.set_function(used)
    STORE_BYTES.set_function(store_bytes)


def create_app(settings: GatewaySettings) -> Starlette:
    """Build the gateway for ``settings``; parts open and close with the app's lifespan."""
    policy = IngestPolicy(
        duplicates=settings.ingest.duplicates,
        patient_mismatch=settings.ingest.patient_mismatch,
        sop_classes=frozenset(settings.ingest.sop_classes),
        forward_to_pacs=settings.ingest.forward_to_pacs and settings.pacs.url is not None,
    )
    store = EmbeddedStore(settings.data_dir / "store", policy)
    # Results of models the site has not validated (federated analyses, issue 17): apart from
    # the clinical store, never forwarded to the PACS, read by admins only.
    research_store = EmbeddedStore(
        settings.data_dir / "research", dataclasses.replace(policy, forward_to_pacs=False)
    )
    measure_disk(store)
    pacs = PacsClient(settings.pacs) if settings.pacs.url else None
    dicomweb = upstream_routes() if pacs else embedded_routes()
    database = Database.open(settings.queue, settings.data_dir)
    queue = JobQueue(database)
    analyses = AnalysisStore(database)
    ledger = StabilityLedger(database)
    this_gateway = gateway_id(settings)
    root = own_url(settings)

    def record_arrivals(stored: Sequence[StoredInstance]) -> None:
        series = {(s.record.study_instance_uid, s.record.series_instance_uid) for s in stored}
        ledger.touch_series(sorted(series), this_gateway, time.time())

    store.subscribe(record_arrivals)
    # The findings index learns every stored instance, by any intake path (STOW, DIMSE,
    # poller, /results), once per committed batch.
    index = FindingsIndex.open(settings.index, settings.data_dir)
    # The federated API's cohort queries read a columnar copy of it (built in the background
    # the first time; until then the index answers).
    copy = index.use_columnar_copy()
    INDEX_COPY_READY.set_function(lambda: float(copy is not None and copy.ready))
    store.subscribe(lambda stored: index.observe_instances([s.dataset for s in stored]))
    # Research results are counted by the aggregates too.
    research_store.subscribe(lambda stored: index.observe_instances([s.dataset for s in stored]))
    STORE_UNOBSERVED.set_function(
        lambda: float(store.catalog.unobserved_count() + research_store.catalog.unobserved_count())
    )
    authenticator = Authenticator(settings.auth)
    # The site admin's decisions (training plans, analyses), in the index's database.
    approvals = Approvals(index.database)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.routing:
            # Before anything starts: with the strict setting a bad rule stops the start here.
            await check_served_models(
                settings.routing,
                strict=settings.pipeline.require_served_models,
                tls=settings.pipeline.inference_tls,
            )
        tasks: list[asyncio.Task[None]] = [
            # What an observer missed (its database away; a crash between a commit and the
            # observers) is handed over again, the first time at the start.
            asyncio.create_task(
                redeliver_unobserved([store, research_store]), name="observer-redelivery"
            )
        ]
        dimse = DimseIntake(store, settings.dimse) if settings.dimse.enabled else None
        if dimse is not None:
            await anyio.to_thread.run_sync(dimse.start)
        if pacs is not None:
            forwarder = Forwarder(store, pacs)
            store.subscribe(lambda stored: forwarder.notify())
            tasks.append(asyncio.create_task(forwarder.run(), name="forwarder"))
        worker: JobWorker | None = None
        if settings.pipeline.workers:
            token = settings.pipeline.callback_token
            worker = JobWorker(
                queue,
                settings.pipeline,
                f"{this_gateway}:{os.getpid()}",
                destination_url=root + "/results",
                callback_auth={"type": "bearer", "token": token.get_secret_value()}
                if token
                else None,
                research_destination_url=root + "/research-results",
            )
            tasks.append(asyncio.create_task(worker.run(), name="worker"))
        research = settings.pipeline.research
        research_inference_url = research.inference_url or next(
            (rule.inference_url for rule in settings.routing), None
        )
        if worker is not None and research_inference_url is not None:
            runner = AnalysisRunner(
                analyses,
                queue,
                index,
                store,
                pacs,
                research,
                research_inference_url,
                settings.data_dir / "analyses",
                source_url=root + "/dicomweb",
                on_enqueued=worker.notify,
                inference_tls=settings.pipeline.inference_tls,
            )
            tasks.append(asyncio.create_task(runner.run(), name="analysis-runner"))
        scheduler = StabilityScheduler(
            store,
            ledger,
            queue,
            settings.routing,
            settings.pipeline,
            this_gateway,
            source_url=root + "/dicomweb",
            on_enqueued=worker.notify if worker is not None else None,
            # Serving from the embedded store: a stable series' metadata is prepared for the
            # viewer that opens it (a second of header reading at 500 instances, docs/dicomweb.md).
            on_stable=functools.partial(keep_series_metadata, store) if pacs is None else None,
        )
        tasks.append(asyncio.create_task(scheduler.run(), name="scheduler"))
        if pacs is not None and settings.pacs.poll.enabled:
            poller = PacsPoller(
                store,
                pacs,
                settings.pacs.poll,
                settings.data_dir / "poller.json",
                settings.ingest.max_instance_bytes,
            )
            tasks.append(asyncio.create_task(poller.run(), name="poller"))
        if pacs is not None and settings.pipeline.retention_seconds is not None:
            retention = Retention(store, queue, pacs, settings.pipeline.retention_seconds)
            tasks.append(asyncio.create_task(retention.run(), name="retention"))
        log.info(
            "gateway.started",
            listening_on=f"{scheme(settings)}://{_url_host(settings.listen.host)}:{settings.listen.port}",
            dicomweb=root + "/dicomweb",
            data_dir=str(settings.data_dir),
            pacs=settings.pacs.url or "embedded store",
            queue="postgresql" if settings.queue.url else "sqlite",
            rules=[rule.name for rule in settings.routing],
            auth="bearer tokens" if settings.auth.enabled else "off (loopback only)",
            client_certificates=_client_certificates(settings),
        )
        try:
            yield
        finally:
            if dimse is not None:
                await anyio.to_thread.run_sync(dimse.stop)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if pacs is not None:
                await pacs.aclose()
            database.close()
            index.close()
            store.close()
            research_store.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Mount("/dicomweb", routes=dicomweb),
            Mount("/results", routes=results_routes()),
            Mount(
                "/research-results",
                app=WithStore(Router(research_results_routes()), research_store),
            ),
            Mount("/research/dicomweb", app=WithStore(Router(read_routes()), research_store)),
            *job_routes(),
            *approval_routes(analyses, approvals),
            Mount(
                "/federated/v1",
                routes=[
                    *federated_routes(index, settings.federated, authenticator),
                    *analysis_routes(
                        analyses,
                        approvals,
                        authenticator,
                        settings.auth.hubs,
                        settings.data_dir,
                    ),
                ],
            ),
            *dashboard_routes(
                "site",
                auth_enabled=settings.auth.enabled,
                oidc_configured=settings.auth.oidc is not None,
                oidc_login=settings.auth.oidc.dashboard_login() if settings.auth.oidc else None,
            ),
        ],
        middleware=[
            request_context(),
            # Before authentication: a browser's preflight carries no credentials.
            *cors(settings.http.cors_origins),
            compression(),
            Middleware(AuthMiddleware, authenticator=authenticator),
        ],
        exception_handlers={
            DicomWebError: dicomweb_error_handler,
            HTTPException: http_exception_handler,
            DatabaseDisconnected: database_disconnected_handler,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.database_health = DatabaseHealth(configured_databases(settings))
    app.state.pacs = pacs
    app.state.sources = SourceChooser(store, pacs) if pacs else None
    app.state.queue = queue
    app.state.analyses = analyses
    app.state.research_store = research_store
    app.state.ledger = ledger
    return app
