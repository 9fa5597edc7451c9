"""Which embedded store a DICOMweb request reads or writes: the clinical one, or another.

The gateway keeps a second embedded store for the results of research (a federated analysis
whose model the site has not validated, issue 17): mounted at ``/research-results`` (STOW-RS,
never forwarded to the PACS) and ``/research/dicomweb`` (QIDO-RS, WADO-RS), apart from
``/dicomweb``. The same handlers serve both; :class:`WithStore` puts the store a mount serves
into the request's scope and :func:`store_of` reads it, the clinical store by default.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute, Router
from starlette.types import Receive, Scope, Send

from gateway.store import EmbeddedStore

_SCOPE_KEY = "fedgate.store"


def store_of(request: Request) -> EmbeddedStore:
    """The store this request is about (the app's clinical store unless a mount says)."""
    store: EmbeddedStore = request.scope.get(_SCOPE_KEY) or request.app.state.store
    return store


class WithStore:
    """An ASGI app serving ``app`` against ``store`` instead of the clinical store."""

    def __init__(self, app: Router, store: EmbeddedStore):
        self.app = app
        self.store = store

    @property
    def routes(self) -> list[BaseRoute]:
        """The routes served (a ``Mount`` lists them: the role and OpenAPI checks walk them)."""
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, _SCOPE_KEY: self.store}, receive, send)
