"""``PUT /v2/repository/models/{name}``: install a model into the repository while serving.

Named after the Open Inference Protocol's model repository extension (Triton's
``/v2/repository/...``), which loads models already on the server's disk; installing one sent
over HTTP is fedgate's own addition, used by a gateway that runs a federated analysis's model
(issue 17). The body is an uncompressed tar (``application/x-tar``) of two regular files,
``model.yaml`` and ``model.onnx`` — the bundle a hub sends a site. An installed model is never
overwritten: 201 when installed, 200 when exactly these files are installed under the name
already, 409 when the name is taken by other content. Only a caller presenting the admin
token (``admin_token_sha256``) may install; without that setting installing is off (403).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import tarfile

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference_service.errors import BadRequestError, InferenceServiceError
from inference_service.repository import INSTALL_FILES, ModelRepository, install_model
from inference_service.settings import InferenceSettings

#: A model's name is its folder's name in the repository.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message, "kind": "permanent"}, status_code=status)


def _authorised(request: Request, settings: InferenceSettings) -> Response | None:
    """None when the caller may install; else the 401 or 403 to answer."""
    if settings.admin_token_sha256 is None:
        return _error("installing models is off here (no admin_token_sha256 is set)", 403)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return JSONResponse(
            {"error": "installing a model needs the admin bearer token", "kind": "permanent"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="fedgate-inference"'},
        )
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    if not hmac.compare_digest(digest, settings.admin_token_sha256):
        return _error("this token may not install models", 403)
    return None


def _files(body: bytes) -> dict[str, bytes]:
    """model.yaml and model.onnx from a tar of exactly those two regular files."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as archive:
            for member in archive.getmembers():
                if member.name not in INSTALL_FILES or not member.isreg() or member.name in files:
                    raise BadRequestError(
                        f"the tar holds {member.name!r}; it must hold exactly the regular "
                        f"files {' and '.join(INSTALL_FILES)}, once each"
                    )
                extracted = archive.extractfile(member)
                assert extracted is not None  # a regular file
                files[member.name] = extracted.read()
    except tarfile.TarError as error:
        raise BadRequestError(f"the body is not an uncompressed tar: {error}") from None
    missing = [name for name in INSTALL_FILES if name not in files]
    if missing:
        raise BadRequestError(f"the tar lacks {' and '.join(missing)}")
    return files


async def install(request: Request) -> Response:
    settings: InferenceSettings = request.app.state.settings
    repository: ModelRepository = request.app.state.repository
    refusal = _authorised(request, settings)
    if refusal is not None:
        return refusal
    name = request.path_params["name"]
    if not _NAME.match(name):
        return _error("a model name is 1-128 of A-Z a-z 0-9 . _ - (not starting with . _ -)", 400)
    limit = settings.concurrency.max_infer_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _error(f"request body of {declared} bytes exceeds {limit}", 413)
    try:
        files = _files(await request.body())
        created = await anyio.to_thread.run_sync(install_model, repository, name, files, settings)
    except InferenceServiceError as error:
        return JSONResponse(
            {"error": error.message, "kind": error.kind}, status_code=error.status_code
        )
    model = repository.get(name)
    return JSONResponse(
        {"name": name, "version": model.manifest.version, "installed": created},
        status_code=201 if created else 200,
    )


routes = [Route("/v2/repository/models/{name}", install, methods=["PUT"])]
