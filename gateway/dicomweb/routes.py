"""The ``/dicomweb`` routes: served by the embedded store, or passed through to ``pacs.url``.

STOW-RS always lands in the embedded store (the intake for analysis). QIDO-RS and WADO-RS
come from the upstream PACS when one is configured, else from the embedded store.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from gateway.dicomweb import qido, stow, wado
from gateway.dicomweb.proxy import proxy_to_pacs

_STUDY = "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"


def _stow_routes() -> list[BaseRoute]:
    return [
        Route("/studies", stow.store_instances, methods=["POST"]),
        Route(_STUDY, stow.store_instances, methods=["POST"]),
    ]


def embedded_routes() -> list[BaseRoute]:
    return [
        *_stow_routes(),
        Route("/studies", qido.search_studies, methods=["GET"]),
        Route(_STUDY + "/series", qido.search_series, methods=["GET"]),
        Route("/series", qido.search_series, methods=["GET"]),
        Route(_SERIES + "/instances", qido.search_instances, methods=["GET"]),
        Route(_STUDY + "/instances", qido.search_instances, methods=["GET"]),
        Route("/instances", qido.search_instances, methods=["GET"]),
        Route(_STUDY, wado.retrieve_instances, methods=["GET"]),
        Route(_SERIES, wado.retrieve_instances, methods=["GET"]),
        Route(_INSTANCE, wado.retrieve_instances, methods=["GET"]),
        Route(_STUDY + "/metadata", wado.retrieve_metadata, methods=["GET"]),
        Route(_SERIES + "/metadata", wado.retrieve_metadata, methods=["GET"]),
        Route(_INSTANCE + "/metadata", wado.retrieve_metadata, methods=["GET"]),
        Route(_INSTANCE + "/frames/{frames}", wado.retrieve_frames, methods=["GET"]),
        Route(_INSTANCE + "/bulkdata/{tag}", wado.retrieve_bulk_data, methods=["GET"]),
    ]


def upstream_routes() -> list[BaseRoute]:
    return [*_stow_routes(), Route("/{path:path}", proxy_to_pacs, methods=["GET"])]
