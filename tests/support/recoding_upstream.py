"""A DICOMweb server that answers compressed AND chunked: a real HTTP/1.1 server in front of
another DICOMweb server (Orthanc), for what Orthanc itself does not do.

Orthanc 1.10 gzips its DICOM JSON by default but sends it with a Content-Length, and sends
WADO-RS multipart bodies uncompressed, read to the end of the connection. Other archives and
reverse proxies in front of them (nginx ``gzip on`` with ``chunked_transfer_encoding``)
compress everything and send it chunked. This server fetches each GET from the server behind
it, puts its own root into the URLs in the answer (as an archive writes its own address),
compresses the whole body with ``encoding`` (``gzip`` or ``deflate``, RFC 9110 8.4.1) and
sends it with ``Transfer-Encoding: chunked`` in small chunks, so that a gzip member, a URL
and a multipart boundary all straddle chunk borders.
"""

from __future__ import annotations

import gzip
import zlib
from http.server import BaseHTTPRequestHandler

import httpx

from tests.support.http_server import LoopbackHTTPServer

PREFIX = "/dicom-web"


class RecodingUpstream(LoopbackHTTPServer):
    """Start with :meth:`start`, stop with :meth:`stop`; ``served`` records each answer."""

    def __init__(self, behind: str, encoding: str, chunk_size: int = 997) -> None:
        if encoding not in ("gzip", "deflate"):
            raise ValueError(f"unsupported encoding {encoding!r}")
        self.behind = behind.rstrip("/")
        self.encoding = encoding
        self.chunk_size = chunk_size
        # (path, Accept-Encoding asked, Content-Encoding sent, chunks sent)
        self.served: list[tuple[str, str, str, int]] = []

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def encode(self, body: bytes) -> bytes:
        return gzip.compress(body) if self.encoding == "gzip" else zlib.compress(body)

    def start(self) -> RecodingUpstream:
        self.start_serving()
        return self

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)


def _handler_for(upstream: RecodingUpstream) -> type[BaseHTTPRequestHandler]:
    client = httpx.Client(timeout=60.0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked transfer needs HTTP/1.1

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            asked = self.headers.get("Accept-Encoding", "")
            behind = client.get(
                upstream.behind + self.path.removeprefix(PREFIX),
                headers={
                    "Accept": self.headers.get("Accept", "*/*"),
                    "Accept-Encoding": "identity",
                },
            )
            body = behind.content.replace(upstream.behind.encode(), upstream.dicomweb_url.encode())
            encoding = upstream.encoding if upstream.encoding in asked else "identity"
            if encoding != "identity":
                body = upstream.encode(body)
            self.send_response(behind.status_code)
            self.send_header("Content-Type", behind.headers.get("content-type", "text/plain"))
            if encoding != "identity":
                self.send_header("Content-Encoding", encoding)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunks = 0
            for start in range(0, len(body), upstream.chunk_size):
                piece = body[start : start + upstream.chunk_size]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                chunks += 1
            self.wfile.write(b"0\r\n\r\n")
            upstream.served.append((self.path, asked, encoding, chunks))

    return Handler
