"""CORS (Fetch Standard, "CORS protocol") for viewers served from other origins.

A DICOMweb viewer such as OHIF, served from ``https://viewer.example``, calls the gateway from
the browser: the browser first asks with a preflight ``OPTIONS`` (for ``Authorization`` and a
non-simple ``Accept``), then lets the page read an answer only if it names the page's origin.
Only the origins in ``http.cors_origins`` are named; with none configured no CORS header is
sent at all (and every cross-origin read stays blocked by the browser).

The preflight is answered before authentication (browsers never send credentials on it); the
request that follows is authenticated as any other. No cookies are involved (bearer tokens are
sent by the page), so ``Access-Control-Allow-Credentials`` is not sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

#: The methods of DICOMweb (QIDO/WADO GET and HEAD, STOW POST, UPS PUT) and of the job API.
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
#: The request headers a viewer sends beyond the CORS-safelisted ones.
CORS_REQUEST_HEADERS = ("Authorization", "Accept", "Content-Type")
#: Answer headers a page may read besides the safelisted ones (Content-Type is one): the
#: error reason (PS3.18 8.6.3), the length for progress, and where STOW-RS stored a study.
CORS_EXPOSED_HEADERS = ("Warning", "Content-Length", "Content-Location", "Location")
#: How long a browser may reuse a preflight answer (seconds): a viewer asks for many frames.
PREFLIGHT_MAX_AGE = 600


def cors(origins: Sequence[str]) -> list[Middleware]:
    """The CORS middleware for ``origins``, or none when no origin is configured."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=list(CORS_METHODS),
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=PREFLIGHT_MAX_AGE,
        )
    ]
