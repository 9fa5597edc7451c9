"""Real HTTP servers for the federated tests: uvicorn on free loopback ports, in threads.

Until the lead's gateway process exists (tests/support/gateway.py), a "site" here is a real
uvicorn server serving exactly the routes the gateway mounts at ``/federated/v1``
(:func:`gateway.federated.api.federated_routes`) over a real findings index.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from gateway.auth import Authenticator, AuthSettings
from gateway.federated.api import federated_routes
from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex
from tests.support.ports import free_port


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def site_app(
    index: FindingsIndex,
    settings: FederatedSettings,
    auth: AuthSettings | None = None,
    extra: list[Any] | None = None,
) -> Starlette:
    authenticator = Authenticator(auth or AuthSettings())
    return Starlette(
        routes=[
            Route("/healthz", _healthz),
            Mount("/federated/v1", routes=federated_routes(index, settings, authenticator)),
            *(extra or []),
        ]
    )


class ThreadedServer:
    """uvicorn serving ``app`` on a free port in a daemon thread."""

    def __init__(self, app: Any):
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serving(app: Any) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app).start()
    try:
        yield server
    finally:
        server.stop()


class HangingServer:
    """Accepts connections and reads requests, but never answers: a hung site."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(connection)

    def start(self) -> HangingServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        for connection in self.connections:
            connection.close()
        self.sock.close()
