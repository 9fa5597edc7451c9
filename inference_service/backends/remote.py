"""Run a model on a remote Open Inference Protocol v2 server (Triton, KServe, another fedgate).

This is how a site moves inference to a GPU server: the manifest (or the settings) says
``backend: {type: oip, url: http://triton:8000}``; the study-level work (fetch, preprocess,
post-process, SR/SEG) stays here and only the tensors travel. Metadata is read from
``GET /v2/models/{name}`` when first needed, so the service starts even while the remote
server is still coming up (the model is then "not ready").

Errors: connection failures, timeouts and 5xx are transient; a 4xx is permanent (the remote
server refused the tensors, retrying will not help).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import numpy as np

from inference_service.errors import BadRequestError, PermanentError, TransientError
from inference_service.manifest import OipBackend as OipBackendSpec
from inference_service.tensors import HEADER_LENGTH, TensorSpec, decode_tensor, encode_tensors
from tlsconfig import client_context


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error if error is not None else body)[:300]


class RemoteBackend:
    platform = "oip_remote"

    def __init__(self, spec: OipBackendSpec, model_name: str) -> None:
        self.base_url = spec.url.rstrip("/")
        self.remote_name = spec.model_name or model_name
        self.binary_data = spec.binary_data
        self.client = httpx.Client(
            timeout=httpx.Timeout(spec.timeout_seconds, connect=5.0),
            verify=client_context(spec.tls),
        )
        self._lock = threading.Lock()
        self._inputs: tuple[TensorSpec, ...] | None = None
        self._outputs: tuple[TensorSpec, ...] | None = None

    @property
    def model_url(self) -> str:
        return f"{self.base_url}/v2/models/{self.remote_name}"

    def describe(self) -> str:
        return f"remote OIP {self.model_url}"

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as error:
            raise TransientError(f"model server {self.base_url} timed out: {error!r}") from None
        except httpx.HTTPError as error:
            raise TransientError(
                f"model server {self.base_url} unreachable: {error!r}", status_code=503
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(
                f"model server {url} answered {response.status_code}: {_error_message(response)}",
                status_code=503,
            )
        if response.status_code >= 400:
            raise PermanentError(
                f"model server {url} answered {response.status_code}: {_error_message(response)}",
                status_code=400 if response.status_code != 404 else 502,
            )
        return response

    def _metadata(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        with self._lock:
            if self._inputs is None or self._outputs is None:
                body = self._request("GET", self.model_url).json()

                def specs(key: str) -> tuple[TensorSpec, ...]:
                    return tuple(
                        TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
                        for t in body.get(key, [])
                    )

                self._inputs, self._outputs = specs("inputs"), specs("outputs")
            return self._inputs, self._outputs

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._metadata()[0]

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._metadata()[1]

    def ready(self) -> bool:
        try:
            response = self.client.get(f"{self.model_url}/ready", timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def infer(
        self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = output_names or [spec.name for spec in self.outputs]
        header: dict[str, Any] = {
            "outputs": [
                {"name": name, "parameters": {"binary_data": self.binary_data}} for name in names
            ]
        }
        body, json_length = encode_tensors(
            header, inputs, {name: self.binary_data for name in inputs}, "inputs"
        )
        headers = {
            "Content-Type": "application/octet-stream" if json_length else "application/json"
        }
        if json_length is not None:
            headers[HEADER_LENGTH] = str(json_length)
        response = self._request("POST", f"{self.model_url}/infer", content=body, headers=headers)
        return parse_infer_response(response.content, response.headers.get(HEADER_LENGTH))


def parse_infer_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """The outputs of an infer response (JSON, or JSON + binary tensors)."""
    json_length = int(header_length) if header_length is not None else len(body)
    try:
        header = json.loads(body[:json_length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TransientError(f"model server sent an unreadable response: {error}") from None
    view = memoryview(body)
    offset = json_length
    outputs: dict[str, np.ndarray] = {}
    for entry in header.get("outputs", []):
        size = (entry.get("parameters") or {}).get("binary_data_size")
        binary = None
        if size is not None:
            binary = view[offset : offset + int(size)]
            offset += int(size)
        try:
            name, array = decode_tensor(entry, binary)
        except BadRequestError as error:
            raise TransientError(f"model server sent a malformed tensor: {error.message}") from None
        outputs[name] = array
    return outputs
