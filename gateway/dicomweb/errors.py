"""Errors the DICOMweb endpoints answer with: a status and a reason a person can act on.

PS3.18 8.6.3 lets the origin server explain an error in a ``Warning: 299`` header; we send the
reason there and as the plain-text body, so both programs and people see it.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

# Control characters (CR, LF, NUL...) end or corrupt a header line: never inside one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DicomWebError(Exception):
    def __init__(self, status_code: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason
        self.headers = headers or {}


def warning_header(reason: str) -> str:
    """A ``Warning: 299`` value (RFC 7234 5.5). A header field value is ASCII text in practice
    (RFC 9110 5.5: anything else is opaque, and Starlette encodes headers as Latin-1), while a
    reason may quote what the client sent (``?中=1``): other characters are percent-encoded
    (UTF-8) here, as in the URL they came in; the body keeps the reason as it is."""
    text = _CONTROL.sub(" ", reason[:500].replace('"', "'").replace("\\", "\\\\"))
    text = "".join(c if c.isascii() else quote(c) for c in text)
    return f'299 fedgate "{text}"'


async def dicomweb_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DicomWebError)
    headers = {"Warning": warning_header(exc.reason), **exc.headers}
    return PlainTextResponse(exc.reason + "\n", status_code=exc.status_code, headers=headers)
