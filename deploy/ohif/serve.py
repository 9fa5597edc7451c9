#!/usr/bin/env python3
"""Serve the prebuilt OHIF Viewer (``dist/`` of npm ``@ohif/app``) against fedgate's DICOMweb.

Only the Python standard library (it runs on the Debian base image, without fedgate's venv):

- ``dist/`` as static files; unknown paths answer ``index.html`` (OHIF's client-side routes,
  e.g. ``/viewer?StudyInstanceUIDs=...``);
- ``app-config.js`` with the default data source's ``qidoRoot``/``wadoRoot``/``wadoUriRoot``
  pointed at the same-origin path ``/dicomweb`` and ``staticWado: false`` (DESIGN.md, reference
  figures: what OHIF 3.13 needs to run offline against a DICOMweb server);
- ``/dicomweb/...`` proxied (GET only: the viewer reads) to ``--upstream`` (the gateway's
  ``/dicomweb``, the same path, with the browser's Host passed on, so that the BulkDataURIs the
  gateway writes into metadata are same-origin too), with the token of ``--token-file`` (a
  credential with the ``viewer`` role, docs/roles.md) added server-side, so the browser never
  holds it. Whoever reaches this server
  reads what the viewer role reads: publish it on loopback or behind the hospital's SSO proxy.
"""

from __future__ import annotations

import argparse
import mimetypes
import re
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PREFIX = "/dicomweb"
_PASSED_REQUEST_HEADERS = ("accept", "range", "host")
_PASSED_RESPONSE_HEADERS = ("content-type", "content-range", "cache-control")


def patched_app_config(source: str) -> bytes:
    """OHIF's app-config.js with every DICOMweb root at the same-origin proxy."""
    patched = re.sub(r"(wadoUriRoot|qidoRoot|wadoRoot):\s*'[^']*'", rf"\1: '{PREFIX}'", source)
    patched = patched.replace("staticWado: true", "staticWado: false")
    if patched.count(f"'{PREFIX}'") < 3:
        raise SystemExit("ohif-serve: app-config.js has an unexpected shape (OHIF version?)")
    return patched.encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="OHIF's dist/ folder")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--upstream", default="http://gateway:8080/dicomweb")
    parser.add_argument("--token-file", type=Path, help="bearer token with the viewer role")
    args = parser.parse_args()
    root = args.root.resolve()
    app_config = patched_app_config((root / "app-config.js").read_text(encoding="utf-8"))
    token = args.token_file.read_text(encoding="utf-8").strip() if args.token_file else None
    upstream = args.upstream.rstrip("/")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == PREFIX or path.startswith(PREFIX + "/"):
                self.proxy()
            elif path == "/app-config.js":
                self.send(200, app_config, "application/javascript")
            else:
                candidate = (root / path.lstrip("/")).resolve()
                if not candidate.is_relative_to(root) or not candidate.is_file():
                    candidate = root / "index.html"
                kind = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
                if candidate.suffix == ".wasm":
                    kind = "application/wasm"
                self.send(200, candidate.read_bytes(), kind)

        def proxy(self) -> None:
            request = urllib.request.Request(upstream + self.path[len(PREFIX) :])
            for name in _PASSED_REQUEST_HEADERS:
                if self.headers.get(name):
                    request.add_header(name, self.headers[name])
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    status, headers, body = answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as error:
                status, headers, body = error.code, error.headers, error.read()
            except OSError as error:
                self.send(502, f"gateway unreachable: {error}".encode(), "text/plain")
                return
            self.send_response(status)
            for name in _PASSED_RESPONSE_HEADERS:
                if headers.get(name):
                    self.send_header(name, headers[name])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
