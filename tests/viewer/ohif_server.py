"""A tiny same-origin server for the prebuilt OHIF Viewer: its ``dist/`` plus a DICOMweb proxy.

OHIF (npm ``@ohif/app`` 3.13, prebuilt ``dist/``) runs offline when its default DICOMweb data
source points at a same-origin path (DESIGN.md, reference figures). This server

- serves ``dist/`` with a patched ``app-config.js`` (``qidoRoot``/``wadoRoot``/``wadoUriRoot`` =
  the proxy's path, ``/dicom-web`` by default, ``staticWado: false``);
- proxies that path to a real DICOMweb server (Orthanc, or the gateway at ``/dicomweb``),
  passing the browser's Host on so that the BulkDataURIs the server writes into metadata are
  same-origin too (the proxy's path must be the server's own root path for that);
- answers ``index.html`` for unknown paths (``/viewer``: OHIF's client-side routes).
"""

from __future__ import annotations

import mimetypes
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx

from tests.support.http_server import LoopbackHTTPServer

PROXY_PREFIX = "/dicom-web"
# Request headers worth passing upstream (the rest are hop-by-hop or browser noise).
_FORWARDED_REQUEST_HEADERS = ("accept", "host", "range", "content-type")
_FORWARDED_RESPONSE_HEADERS = ("content-type", "content-length", "content-range")


def patch_app_config(source: str, prefix: str = PROXY_PREFIX) -> str:
    """Point every DICOMweb root at the same-origin proxy and turn static WADO off."""
    patched = re.sub(r"(wadoUriRoot|qidoRoot|wadoRoot):\s*'[^']*'", rf"\1: '{prefix}'", source)
    patched = patched.replace("staticWado: true", "staticWado: false")
    if patched.count(f"'{prefix}'") < 3 or "staticWado: false" not in patched:
        raise RuntimeError("OHIF's app-config.js has changed shape; update patch_app_config")
    return patched


class OhifServer(LoopbackHTTPServer):
    """Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(
        self,
        dist: Path,
        upstream_dicomweb_url: str,
        prefix: str = PROXY_PREFIX,
        cross_origin: bool = False,
    ) -> None:
        """With ``cross_origin`` the viewer calls ``upstream_dicomweb_url`` itself, from its
        own origin (the server's CORS must allow it), instead of the same-origin proxy."""
        self.dist = dist
        self.upstream = upstream_dicomweb_url.rstrip("/")
        self.prefix = prefix
        roots = self.upstream if cross_origin else prefix
        self.app_config = patch_app_config((dist / "app-config.js").read_text(), roots)
        self.proxied: list[str] = []  # request lines sent upstream, for diagnostics

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OhifServer:
        self.start_serving()
        return self

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)


def _handler_for(server: OhifServer) -> type[BaseHTTPRequestHandler]:
    client = httpx.Client(timeout=60.0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: the test reports what matters

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == server.prefix or path.startswith(server.prefix + "/"):
                self._proxy()
            elif path == "/app-config.js":
                self._send(200, server.app_config.encode(), "application/javascript")
            else:
                self._static(path)

        def _static(self, path: str) -> None:
            candidate = (server.dist / path.lstrip("/")).resolve()
            inside = candidate.is_relative_to(server.dist.resolve())
            if not inside or not candidate.is_file():
                candidate = server.dist / "index.html"  # client-side route, e.g. /viewer
            kind = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
            if candidate.suffix == ".wasm":
                kind = "application/wasm"
            self._send(200, candidate.read_bytes(), kind)

        def _proxy(self) -> None:
            upstream = server.upstream + self.path[len(server.prefix) :]
            headers = {
                k: v for k, v in self.headers.items() if k.lower() in _FORWARDED_REQUEST_HEADERS
            }
            server.proxied.append(f"GET {self.path}")
            try:
                response = client.get(upstream, headers=headers)
            except httpx.HTTPError as error:
                self._send(502, str(error).encode(), "text/plain")
                return
            self.send_response(response.status_code)
            for key in _FORWARDED_RESPONSE_HEADERS:
                if key in response.headers and key != "content-length":
                    self.send_header(key, response.headers[key])
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
