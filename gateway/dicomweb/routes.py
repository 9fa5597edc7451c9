"""The ``/dicomweb`` routes: served by the embedded store, or passed through to ``pacs.url``.

STOW-RS always lands in the embedded store (the intake for analysis). QIDO-RS and WADO-RS
come from the upstream PACS when one is configured, else from the embedded store. With a PACS,
a read that names one study is answered by the one source ``gateway/dicomweb/sources.py``
chooses for that study, the same at every level; searches across studies by the PACS.

``/results`` takes the analysis results (STOW-RS only): stored, and forwarded to the PACS.
``/research-results`` takes an unvalidated model's results into the research store (never
forwarded), which admins read at ``/research/dicomweb`` (:mod:`gateway.dicomweb.stores`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.dicomweb import qido, rendered, stow, wado
from gateway.dicomweb.proxy import proxy_to_pacs
from gateway.dicomweb.sources import SourceChooser, named_study

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
        Route(_INSTANCE + "/rendered", rendered.retrieve_rendered, methods=["GET"]),
        Route(_INSTANCE + "/frames/{frame}/rendered", rendered.retrieve_rendered, methods=["GET"]),
        Route(_STUDY + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
        Route(_SERIES + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
        Route(_INSTANCE + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
        Route(
            _INSTANCE + "/frames/{frame}/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]
        ),
    ]


def upstream_routes() -> list[BaseRoute]:
    """Every embedded read route, each choosing its source per study; anything else proxied."""
    by_study = [
        Route(route.path, _by_study(route.endpoint), methods=["GET"])
        for route in embedded_routes()
        if isinstance(route, Route) and "GET" in (route.methods or ())
    ]
    return [*_stow_routes(), *by_study, Route("/{path:path}", proxy_to_pacs, methods=["GET"])]


def results_routes() -> list[BaseRoute]:
    return [
        Route("/studies", stow.store_results, methods=["POST"]),
        Route(_STUDY, stow.store_results, methods=["POST"]),
    ]


def research_results_routes() -> list[BaseRoute]:
    return [
        Route("/studies", stow.store_research_results, methods=["POST"]),
        Route(_STUDY, stow.store_research_results, methods=["POST"]),
    ]


def read_routes() -> list[BaseRoute]:
    """QIDO-RS and WADO-RS of an embedded store, without STOW-RS (the research store's)."""
    return [
        route
        for route in embedded_routes()
        if isinstance(route, Route) and "POST" not in (route.methods or ())
    ]


def _by_study(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        study = named_study(request)
        if study is None:
            return await proxy_to_pacs(request)
        sources: SourceChooser = request.app.state.sources
        source = await sources.source_for(study)
        return await (handler(request) if source == "store" else proxy_to_pacs(request))

    return endpoint
