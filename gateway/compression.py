"""gzip for the answers that gain from it (RFC 9110 8.4.1.3), streamed, never buffered.

Starlette's GZipMiddleware learnt to leave chosen content types alone only in releases after the
1.3 series that Flower (our federated learning engine) pins, so the gateway carries this small
middleware of its own: the same behaviour on every Starlette.

For a client that sends ``Accept-Encoding: gzip`` an answer is compressed unless it already has a
Content-Encoding, its content type is one of ``excluded`` (``type/*`` matches a whole type), or
it is a single body under ``minimum_size``. A streamed answer is compressed chunk by chunk, each
chunk flushed with ``Z_SYNC_FLUSH``, so a client reads every part as soon as it is produced.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SelectiveGZip"]

_GZIP_WINDOW = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream


class SelectiveGZip:
    def __init__(
        self,
        app: ASGIApp,
        *,
        excluded: Sequence[str] = (),
        minimum_size: int = 1024,
        compresslevel: int = 6,
    ) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.compresslevel = compresslevel
        self._whole_types = tuple(t[:-1] for t in excluded if t.endswith("/*"))
        self._exact_types = tuple(t for t in excluded if not t.endswith("/*"))

    def _excluded(self, content_type: str) -> bool:
        media_type = content_type.split(";", 1)[0].strip().lower()
        return media_type.startswith(self._whole_types) or media_type in self._exact_types

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = scope["type"] == "http" and "gzip" in Headers(scope=scope).get(
            "accept-encoding", ""
        )
        if not accepted:
            await self.app(scope, receive, send)
            return
        await _Compressor(self, send).run(scope, receive)


class _Compressor:
    """The state of one answer: held start message until the first body says how to send."""

    def __init__(self, middleware: SelectiveGZip, send: Send) -> None:
        self.middleware = middleware
        self.send = send
        self.start: Message | None = None
        self.passthrough = False
        self.compressor: zlib._Compress | None = None

    async def run(self, scope: Scope, receive: Receive) -> None:
        await self.middleware.app(scope, receive, self.on_message)

    async def on_message(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = Headers(raw=message["headers"])
            self.passthrough = "content-encoding" in headers or self.middleware._excluded(
                headers.get("content-type", "")
            )
            if self.passthrough:
                await self.send(message)
            else:
                self.start = message
            return
        if kind != "http.response.body" or self.passthrough:
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        if self.compressor is None:
            assert self.start is not None
            if not more_body and len(body) < self.middleware.minimum_size:
                self.passthrough = True
                await self.send(self.start)
                await self.send(message)
                return
            self.compressor = zlib.compressobj(
                self.middleware.compresslevel, zlib.DEFLATED, _GZIP_WINDOW
            )
            headers = MutableHeaders(raw=self.start["headers"])
            headers["Content-Encoding"] = "gzip"
            headers.add_vary_header("Accept-Encoding")
            if more_body:
                del headers["Content-Length"]
            else:
                data = self.compressor.compress(body) + self.compressor.flush()
                headers["Content-Length"] = str(len(data))
                await self.send(self.start)
                await self.send({"type": "http.response.body", "body": data, "more_body": False})
                return
            await self.send(self.start)
        flush_mode = zlib.Z_SYNC_FLUSH if more_body else zlib.Z_FINISH
        data = self.compressor.compress(body) + self.compressor.flush(flush_mode)
        await self.send({"type": "http.response.body", "body": data, "more_body": more_body})
