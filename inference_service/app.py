"""The inference service's Starlette application: ``/v1`` (analyses, models) and ``/v2`` (OIP).

``POST /v1/analyses`` runs in a worker thread. At most ``concurrency.max_analyses`` run at
once and ``concurrency.max_waiting`` more wait for a slot; past that the request is answered
at once with 429 and ``Retry-After``, so a caller (the gateway's queue) backs off instead of
piling up requests that would time out. Each model runs one tensor at a time, so two analyses
overlap one's fetch/decode/SR with the other's model run.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.to_thread
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference_service import oip, repository_api
from inference_service.analyses import AnalysisRequest, Analyzer
from inference_service.errors import (
    BadRequestError,
    InferenceServiceError,
    PermanentError,
    SaturatedError,
)
from inference_service.metrics import Metrics
from inference_service.repository import ModelRepository
from inference_service.settings import InferenceSettings
from observability import RequestContextMiddleware
from serviceconfig import describe_validation_error

log = structlog.get_logger(__name__)

#: Scraped and polled paths: not worth an access log line each.
QUIET_PATHS = ("/metrics", "/v2/health/live", "/v2/health/ready")


class AnalysisGate:
    """Admits analyses up to running + waiting slots; beyond, :class:`SaturatedError`."""

    def __init__(self, max_running: int, max_waiting: int, retry_after_seconds: int) -> None:
        self.limiter = anyio.CapacityLimiter(max_running)
        self.capacity = max_running + max_waiting
        self.retry_after_seconds = retry_after_seconds
        self.admitted = 0  # only touched from the event loop's thread

    def admit(self) -> None:
        if self.admitted >= self.capacity:
            raise SaturatedError(
                f"{self.admitted} analyses in progress or waiting (the limit): retry later",
                self.retry_after_seconds,
            )
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1


def error_response(error: InferenceServiceError) -> JSONResponse:
    headers = {}
    if isinstance(error, SaturatedError):
        headers["Retry-After"] = str(error.retry_after_seconds)
    return JSONResponse(error.to_json(), status_code=error.status_code, headers=headers)


async def _parse_analysis(request: Request) -> AnalysisRequest:
    body = await request.body()
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequestError(f"request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadRequestError("request body must be a JSON object")
    try:
        return AnalysisRequest.model_validate(data)
    except ValidationError as error:
        raise BadRequestError(describe_validation_error(error)) from None


async def create_analysis(request: Request) -> Response:
    gate: AnalysisGate = request.app.state.gate
    analyzer: Analyzer = request.app.state.analyzer
    metrics: Metrics = request.app.state.metrics
    analysis: AnalysisRequest | None = None
    try:
        analysis = await _parse_analysis(request)
        analyzer.repository.get(analysis.model)  # 404 before waiting for a slot
        gate.admit()
        metrics.in_flight.inc()
        try:
            outcome = await anyio.to_thread.run_sync(analyzer.run, analysis, limiter=gate.limiter)
        finally:
            gate.release()
            metrics.in_flight.dec()
    except InferenceServiceError as error:
        log.info(
            "analysis_refused", status=error.status_code, kind=error.kind, reason=error.message
        )
        metrics.analyses.labels(_model_label(request, analysis), error.kind).inc()
        return error_response(error)
    except Exception:
        # A bug, not the caller's fault; permanent, so a queue gives the job a terminal state
        # instead of retrying it for ever.
        log.exception("analysis_failed")
        metrics.analyses.labels(_model_label(request, analysis), "permanent").inc()
        return error_response(
            PermanentError("internal error in the inference service (see its log)", status_code=500)
        )
    metrics.analyses.labels(analysis.model, "ok").inc()
    for stage, seconds in outcome.timings.items():
        metrics.stage_seconds.labels(analysis.model, stage).observe(seconds)
    return JSONResponse(outcome.to_json())


def _model_label(request: Request, analysis: AnalysisRequest | None) -> str:
    """The model's name for a metric label, only when it is one of ours (bounded cardinality)."""
    repository: ModelRepository = request.app.state.repository
    if analysis is not None and analysis.model in repository.models:
        return analysis.model
    return "(none)"


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def list_models(request: Request) -> Response:
    repository: ModelRepository = request.app.state.repository
    models: list[dict[str, Any]] = []
    for model in repository.models.values():
        manifest = model.manifest
        entry: dict[str, Any] = {
            "name": manifest.name,
            "version": manifest.version,
            "algorithm_uid": manifest.algorithm_uid,
            "manufacturer": manifest.manufacturer,
            "description": manifest.description,
            "modality": manifest.input.modality,
            "outputs": [{"name": o.name, "kind": o.kind} for o in manifest.outputs],
            "backend": model.backend.describe(),
        }
        if manifest.tabular is not None:
            # It reads a study's reports (SR), not a series' pixels; its input is a feature row.
            entry["modality"] = "SR"
            entry["outputs"] = [{"name": manifest.tabular.output, "kind": "tabular"}]
            entry["features"] = list(manifest.tabular.feature_names)
        models.append(entry)
    return JSONResponse({"models": models, "skipped": repository.skipped})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail or "error"
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    body: dict[str, Any] = {"error": {"kind": "permanent", "message": message}}
    if request.url.path.startswith("/v2"):
        body = {"error": message, "kind": "permanent"}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: InferenceSettings, repository: ModelRepository) -> Starlette:
    concurrency = settings.concurrency
    app = Starlette(
        routes=[
            Route("/v1/analyses", create_analysis, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *oip.routes,
            *repository_api.routes,
        ],
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(RequestContextMiddleware, quiet_paths=QUIET_PATHS)],
    )
    app.state.settings = settings
    app.state.repository = repository
    app.state.analyzer = Analyzer(repository, settings)
    app.state.metrics = Metrics()
    app.state.gate = AnalysisGate(
        concurrency.max_analyses, concurrency.max_waiting, concurrency.retry_after_seconds
    )
    return app
