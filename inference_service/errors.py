"""Error classes of the inference service, each with its HTTP status and retry classification.

A caller (the gateway's job queue) must know whether trying again can help:

- *permanent*: the request or its data is wrong (unknown model, wrong modality, inconsistent
  geometry, missing pixel data, unsupported transfer syntax, a malformed tensor). Retrying the
  same request gives the same answer; the job should fail with this message.
- *transient*: something outside the request failed (source or destination unreachable or
  answering 5xx, the service saturated, a remote model server down). Retry later.

Every error renders as ``{"error": {"kind": ..., "message": ...}}`` on ``/v1`` and, on ``/v2``,
as the Open Inference Protocol's ``{"error": message}`` (with the kind beside it).
"""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal["permanent", "transient"]


class InferenceServiceError(Exception):
    """Base class: a message for the caller, an HTTP status and a kind."""

    kind: ErrorKind = "permanent"
    status_code: int = 400

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"kind": self.kind, "message": self.message}}


class PermanentError(InferenceServiceError):
    """Bad input: retrying the same request cannot succeed."""

    kind: ErrorKind = "permanent"
    status_code = 422


class BadRequestError(PermanentError):
    """The request itself is malformed (JSON, fields, tensor shapes)."""

    status_code = 400


class UnknownModelError(PermanentError):
    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}")
        self.model_name = name


class ModelNotReadyError(InferenceServiceError):
    kind: ErrorKind = "transient"
    status_code = 503


class TransientError(InferenceServiceError):
    """A dependency failed (source, destination, remote model server): retry later."""

    kind: ErrorKind = "transient"
    status_code = 502


class SaturatedError(TransientError):
    """Too many analyses in flight: answered 429 with Retry-After."""

    status_code = 429

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
