"""QIDO-RS and WADO-RS passed through to the upstream PACS (when ``pacs.url`` is set).

The gateway's own authentication stands in front; bodies are streamed both ways, never
buffered. URLs the PACS puts in DICOM JSON (RetrieveURL, BulkDataURI) point at the PACS, which
a client of the gateway may not reach: they are rewritten to the gateway's own root on the
fly. An unreachable PACS is a 502, a PACS that does not answer in time a 504.

The PACS may compress its answer (Orthanc gzips DICOM JSON by default). The body is decoded
as it streams in, before the URL rewriting that must see the JSON, and sent on as identity:
neither ``Content-Encoding`` nor ``Content-Length`` of the upstream answer is passed on (the
decoded length differs; the body goes out chunked). The gateway's own GZip middleware then
compresses JSON answers for clients that ask for it (``gateway/app.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.dicomweb.errors import DicomWebError
from gateway.dicomweb.urls import dicomweb_root
from gateway.pacs import PacsClient, UpstreamError

log = structlog.get_logger(__name__)

# Never content-encoding or content-length: the body is passed on decoded (see above).
_PASSED_HEADERS = ("content-type", "warning", "content-location")


async def proxy_to_pacs(request: Request) -> Response:
    pacs: PacsClient = request.app.state.pacs
    path = request.url.path.removeprefix("/dicomweb").lstrip("/")
    accept = request.headers.get("accept", "*/*")
    try:
        upstream = await pacs.open_stream(
            "GET", path, params=request.query_params.multi_items(), headers={"Accept": accept}
        )
    except UpstreamError as error:
        status = 504 if error.kind == "timeout" else 502
        raise DicomWebError(status, f"upstream PACS: {error}") from None
    if upstream.status_code >= 500:
        await upstream.aclose()
        raise DicomWebError(502, f"the upstream PACS failed with HTTP {upstream.status_code}")
    headers = {name: upstream.headers[name] for name in _PASSED_HEADERS if name in upstream.headers}
    body: AsyncIterator[bytes] = upstream.aiter_bytes(1024 * 1024)
    if "json" in upstream.headers.get("content-type", ""):
        gateway_root = dicomweb_root(request)
        body = rewrite_stream(body, pacs.base_url.encode(), gateway_root.encode())
    return StreamingResponse(
        _guarded(body, path),
        status_code=upstream.status_code,
        headers=headers,
        background=BackgroundTask(upstream.aclose),
    )


async def _guarded(body: AsyncIterator[bytes], path: str) -> AsyncIterator[bytes]:
    """Once the response has started, an upstream failure can only cut it short: log it."""
    try:
        async for chunk in body:
            yield chunk
    except Exception as error:
        log.error("proxy.upstream_broke_off", path=path, error=repr(error))
        raise


async def rewrite_stream(
    chunks: AsyncIterator[bytes], old: bytes, new: bytes
) -> AsyncIterator[bytes]:
    """Replace ``old`` with ``new`` in a byte stream, also where ``old`` spans two chunks."""
    pending = b""
    keep = len(old) - 1
    async for chunk in chunks:
        data = (pending + chunk).replace(old, new)
        # Hold back a tail that could be the start of ``old``; the rest is final.
        cut = max(len(data) - keep, 0)
        tail_start = data.rfind(new, max(cut - len(new), 0))
        if tail_start != -1 and tail_start + len(new) > cut:
            cut = tail_start + len(new)
        yield data[:cut]
        pending = data[cut:]
    if pending:
        yield pending
