"""The upstream PACS, over DICOMweb: STOW-RS, QIDO-RS and WADO-RS with retries and timeouts.

Answers may come compressed: Orthanc's default (``HttpCompressionEnabled: true``) gzips its
DICOM JSON for any client that accepts it, and httpx asks for ``gzip, deflate`` (and ``br``
when the ``brotli`` package is installed; it is not here). Every body is therefore read with
httpx's decoding readers (``aiter_bytes``, ``json``), never ``aiter_raw``: the raw bytes are
still compressed, and forwarding them without their ``Content-Encoding`` is unreadable
(RFC 9110 8.4).

Transient failures (connection refused or reset, timeouts, 429, 502, 503, 504) are retried
with exponential backoff and jitter, honouring ``Retry-After``; anything else is final. STOW
is judged by what the archive says it stored (ReferencedSOPSequence), never by the status
code alone: a chunked STOW to Orthanc once answered 200 and stored nothing (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

from gateway.metrics import UPSTREAM_ERRORS
from gateway.settings import PacsSettings
from serviceconfig import BasicAuth, BearerAuth
from tlsconfig import client_context

log = structlog.get_logger(__name__)

_RETRY_STATUS = {429, 502, 503, 504}
_STREAM_CHUNK = 1024 * 1024


class UpstreamError(Exception):
    """The PACS could not be used. ``kind``: unreachable, timeout or status."""

    def __init__(self, kind: str, message: str, status_code: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code

    @property
    def transient(self) -> bool:
        return self.kind in ("unreachable", "timeout") or self.status_code in _RETRY_STATUS


@dataclass
class StoreResult:
    """What the upstream reported for one STOW-RS request."""

    status_code: int
    stored: set[str] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> failure reason


def _auth_headers(settings: PacsSettings) -> dict[str, str]:
    auth = settings.auth
    if isinstance(auth, BearerAuth):
        return {"Authorization": f"Bearer {auth.token.get_secret_value()}"}
    return {}


def _basic_auth(settings: PacsSettings) -> httpx.BasicAuth | None:
    auth = settings.auth
    if isinstance(auth, BasicAuth):
        return httpx.BasicAuth(auth.username, auth.password.get_secret_value())
    return None


class PacsClient:
    """An async DICOMweb client of one upstream root (``pacs.url``)."""

    def __init__(self, settings: PacsSettings, transport: httpx.AsyncBaseTransport | None = None):
        if settings.url is None:
            raise ValueError("PacsClient needs pacs.url")
        self.settings = settings
        self.base_url = settings.url
        self.http = httpx.AsyncClient(
            base_url=settings.url + "/",
            auth=_basic_auth(settings),
            headers=_auth_headers(settings),
            timeout=httpx.Timeout(
                settings.timeout_seconds, connect=settings.connect_timeout_seconds
            ),
            transport=transport,
            follow_redirects=False,
            # pacs.tls: the CA that signs the PACS's certificate, our client certificate.
            verify=client_context(settings.tls),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- low level ---------------------------------------------------------------------

    async def open_stream(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request and return the response with its body unread (caller closes it).

        Retried while the failure is transient and no response has started.
        """
        request = self.http.build_request(
            method, path.lstrip("/"), params=list(params), headers=dict(headers or {})
        )
        return await self._with_retries(lambda: self.http.send(request, stream=True))

    async def _with_retries(self, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await send()
            except httpx.TimeoutException as error:
                failure = UpstreamError("timeout", f"the PACS did not answer in time ({error!r})")
            except httpx.TransportError as error:
                failure = UpstreamError("unreachable", f"the PACS is unreachable ({error!r})")
            else:
                if response.status_code not in _RETRY_STATUS or attempt >= self.settings.retries:
                    return response
                retry_after = _retry_after(response)
                await response.aclose()
                failure = UpstreamError(
                    "status", f"the PACS answered {response.status_code}", response.status_code
                )
            UPSTREAM_ERRORS.labels(kind=failure.kind).inc()
            if attempt >= self.settings.retries:
                raise failure
            attempt += 1
            log.warning("pacs.retry", attempt=attempt, error=str(failure))
            await asyncio.sleep(retry_after if retry_after is not None else _backoff(attempt))

    # -- QIDO-RS / WADO-RS ---------------------------------------------------------------

    async def search(
        self, path: str, params: Sequence[tuple[str, str]] = ()
    ) -> list[dict[str, Any]]:
        """A QIDO-RS search (``studies``, ``studies/{uid}/series`` ...): DICOM JSON results."""
        response = await self.open_stream(
            "GET", path, params, headers={"Accept": "application/dicom+json"}
        )
        try:
            await response.aread()
        finally:
            await response.aclose()
        if response.status_code == 204:
            return []
        _raise_for_status(response)
        results: list[dict[str, Any]] = response.json()
        return results

    async def retrieve(self, path: str, accept: str) -> AsyncIterator[bytes]:
        """Stream a WADO-RS resource's body, decoded from any Content-Encoding."""
        response = await self.open_stream("GET", path, headers={"Accept": accept})
        try:
            _raise_for_status(response)
            async for chunk in response.aiter_bytes(_STREAM_CHUNK):
                yield chunk
        finally:
            await response.aclose()

    # -- STOW-RS -------------------------------------------------------------------------

    async def store(self, files: Sequence[Path], study_uid: str | None = None) -> StoreResult:
        """STOW-RS ``files`` (Part 10) in one request, streamed from disk."""
        boundary = uuid.uuid4().hex
        path = f"studies/{study_uid}" if study_uid else "studies"
        length = sum(_part_overhead(boundary) + f.stat().st_size for f in files) + len(
            f"--{boundary}--\r\n"
        )
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            # A declared length, not chunked: some archives mishandle chunked STOW bodies.
            "Content-Length": str(length),
        }

        async def send() -> httpx.Response:
            request = self.http.build_request(
                "POST", path, headers=headers, content=_stow_body(files, boundary)
            )
            return await self.http.send(request)

        response = await self._with_retries(send)
        return _store_result(response)


def _part_overhead(boundary: str) -> int:
    return len(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n") + 2


async def _stow_body(files: Sequence[Path], boundary: str) -> AsyncIterator[bytes]:
    for path in files:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        data = await asyncio.to_thread(path.read_bytes)
        yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _store_result(response: httpx.Response) -> StoreResult:
    result = StoreResult(status_code=response.status_code)
    if response.status_code >= 500 or response.status_code in (401, 403, 404, 413, 415):
        _raise_for_status(response)
    try:
        body = response.json() if response.content else {}
    except json.JSONDecodeError:
        body = {}
    for item in body.get("00081199", {}).get("Value", []):
        uid = item.get("00081155", {}).get("Value", [None])[0]
        if uid:
            result.stored.add(uid)
    for item in body.get("00081198", {}).get("Value", []):
        uid = item.get("00081155", {}).get("Value", [None])[0]
        reason = item.get("00081197", {}).get("Value", [0x0110])[0]
        if uid:
            result.failed[uid] = int(reason)
    return result


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        UPSTREAM_ERRORS.labels(kind="status").inc()
        raise UpstreamError(
            "status", f"the PACS answered {response.status_code}", response.status_code
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return min(float(value), 60.0) if value.isdigit() else None


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: 0.2 s, 0.4 s, 0.8 s ... capped at 10 s."""
    return random.uniform(0, min(10.0, 0.2 * 2 ** (attempt - 1)))
