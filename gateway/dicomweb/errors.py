"""Errors the DICOMweb endpoints answer with: a status and a reason a person can act on.

PS3.18 8.6.3 lets the origin server explain an error in a ``Warning: 299`` header; we send the
reason there and as the plain-text body, so both programs and people see it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response


class DicomWebError(Exception):
    def __init__(self, status_code: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason
        self.headers = headers or {}


def warning_header(reason: str) -> str:
    text = reason.replace('"', "'").replace("\r", " ").replace("\n", " ")
    return f'299 fedgate "{text[:500]}"'


async def dicomweb_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DicomWebError)
    headers = {"Warning": warning_header(exc.reason), **exc.headers}
    return PlainTextResponse(exc.reason + "\n", status_code=exc.status_code, headers=headers)
