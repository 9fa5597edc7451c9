"""At start: does each routing rule's inference service serve the models the rule names?

A rule naming a model its service does not serve would otherwise be found out only as failed
jobs, one per routed series. The gateway asks each service's model list (``GET /v1/models``)
once at start and logs a warning naming every such rule and model; with
``pipeline.require_served_models`` it refuses to start instead. A service that cannot be asked
(not started yet, another product without ``/v1/models``) is a warning either way: whether it
serves the model is then unknown, not known to be false.
"""

from __future__ import annotations

import httpx
import structlog

from gateway.pipeline.settings import RoutingRule
from tlsconfig import ClientTls, client_context

log = structlog.get_logger(__name__)


class ModelsNotServed(Exception):
    """Rules name models their inference services do not serve (strict setting)."""


async def check_served_models(
    rules: list[RoutingRule],
    strict: bool,
    timeout_seconds: float = 5.0,
    tls: ClientTls | None = None,
) -> list[str]:
    """Warn about (or, ``strict``, refuse) rules naming models not served; returns the
    problems found, one sentence each."""
    problems: list[str] = []
    by_service: dict[str, list[RoutingRule]] = {}
    for rule in rules:
        by_service.setdefault(rule.inference_url, []).append(rule)
    async with httpx.AsyncClient(timeout=timeout_seconds, verify=client_context(tls)) as client:
        for url, service_rules in by_service.items():
            served = await _served(client, url)
            if served is None:
                continue
            for rule in service_rules:
                for model in rule.models:
                    if model not in served:
                        problem = (
                            f"routing rule {rule.name!r} names model {model!r}, which {url} "
                            f"does not serve (it serves: {', '.join(sorted(served)) or 'none'})"
                        )
                        problems.append(problem)
                        log.warning(
                            "pipeline.model_not_served",
                            rule=rule.name,
                            model=model,
                            inference_url=url,
                            served=sorted(served),
                        )
    if problems and strict:
        raise ModelsNotServed("; ".join(problems))
    return problems


async def served_models(client: httpx.AsyncClient, url: str) -> set[str]:
    """The names of the models the inference service at ``url`` serves (``GET /v1/models``);
    raises httpx.HTTPError, or ValueError/KeyError/TypeError for an answer of another shape."""
    response = await client.get(f"{url}/v1/models")
    response.raise_for_status()
    return {str(model["name"]) for model in response.json()["models"]}


async def _served(client: httpx.AsyncClient, url: str) -> set[str] | None:
    try:
        return await served_models(client, url)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        log.warning(
            "pipeline.models_unchecked",
            inference_url=url,
            reason=f"{type(error).__name__}: {error}"[:200],
        )
        return None
