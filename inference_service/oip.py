"""Open Inference Protocol v2 REST endpoints (KServe "V2 inference protocol", Triton HTTP/REST).

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}[/versions/{v}]``,
``/v2/models/{name}[/versions/{v}]/ready`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
with tensors in JSON or with the binary tensor data extension. Errors follow the protocol,
``{"error": message}``, with ``"kind": "permanent"|"transient"`` beside it for fedgate's callers.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference_service import __version__
from inference_service.errors import BadRequestError, InferenceServiceError, UnknownModelError
from inference_service.repository import Model, ModelRepository
from inference_service.tensors import HEADER_LENGTH, encode_tensors, parse_infer_request

SERVER_NAME = "fedgate-inference"


def oip_error(error: InferenceServiceError) -> JSONResponse:
    return JSONResponse({"error": error.message, "kind": error.kind}, status_code=error.status_code)


def _repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository
    return repository


def _model(request: Request) -> Model:
    model = _repository(request).get(request.path_params["name"])
    version = request.path_params.get("version")
    if version is not None and version != model.manifest.version:
        raise UnknownModelError(f"{model.name} version {version}")
    return model


async def server_metadata(request: Request) -> Response:
    return JSONResponse(
        {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}
    )


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    models = _repository(request).models.values()
    is_ready = await anyio.to_thread.run_sync(lambda: all(m.backend.ready() for m in models))
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def model_metadata(request: Request) -> Response:
    try:
        model = _model(request)
        inputs = await anyio.to_thread.run_sync(lambda: model.backend.inputs)
        outputs = await anyio.to_thread.run_sync(lambda: model.backend.outputs)
    except InferenceServiceError as error:
        return oip_error(error)
    return JSONResponse(
        {
            "name": model.name,
            "versions": [model.manifest.version],
            "platform": model.backend.platform,
            "inputs": [spec.to_json() for spec in inputs],
            "outputs": [spec.to_json() for spec in outputs],
        }
    )


async def model_ready(request: Request) -> Response:
    try:
        model = _model(request)
    except InferenceServiceError as error:
        return oip_error(error)
    is_ready = await anyio.to_thread.run_sync(model.backend.ready)
    return JSONResponse(
        {"name": model.name, "ready": is_ready}, status_code=200 if is_ready else 503
    )


async def infer(request: Request) -> Response:
    try:
        model = _model(request)
        limit = request.app.state.settings.concurrency.max_infer_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequestError(
                f"request body of {declared} bytes exceeds {limit}", status_code=413
            )
        body = await request.body()
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        names = list(parsed.outputs) if parsed.outputs is not None else None
        outputs = await anyio.to_thread.run_sync(model.backend.infer, parsed.inputs, names)
    except InferenceServiceError as error:
        if not isinstance(error, UnknownModelError):
            request.app.state.metrics.infer_requests.labels(model.name, error.kind).inc()
        return oip_error(error)
    request.app.state.metrics.infer_requests.labels(model.name, "ok").inc()
    header: dict[str, Any] = {"model_name": model.name, "model_version": model.manifest.version}
    if parsed.request_id is not None:
        header["id"] = parsed.request_id
    binary = parsed.outputs or {}
    if parsed.binary_outputs:
        binary = dict.fromkeys(outputs, True)
    content, json_length = encode_tensors(header, outputs, binary, "outputs")
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(json_length)},
    )


routes = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2/models/{name}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
]
