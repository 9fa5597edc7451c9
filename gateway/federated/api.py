"""The Starlette routes of ``/federated/v1`` (openapi/federated.yaml).

- ``GET  /count``: a count, the cohort given as QIDO-style query parameters;
- ``POST /aggregate``: any aggregate, the cohort and aggregate given as JSON;
- ``GET  /budget``: the calling client's privacy budget.

Every route needs the ``query`` role (``admin`` has it too). Answers are aggregates only; bad
input is a 400 naming the field, a refusal by disclosure control a 403 with its reason.

The caller is a :class:`~gateway.auth.Principal`: a credential of the site, or a person relayed
by a hub with a signed assertion (``Fedgate-On-Behalf-Of``). Budgets belong to the person:
:meth:`FederatedService.answer` is given ``principal.person`` as its client, and every audit
entry names both the credential and the person.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.auth import ON_BEHALF_OF_HEADER, Authenticator, Principal, authorize
from gateway.federated.audit import asked_by
from gateway.federated.cohort import AggregateRequest
from gateway.federated.matching import FilterError
from gateway.federated.query_params import parse_count_query
from gateway.federated.service import FederatedService, Refused, RequestError
from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex

MAX_BODY_BYTES = 1024 * 1024


def error_response(status: int, reason: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": reason}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def validation_response(error: ValidationError) -> JSONResponse:
    """400 naming each field at fault (dotted path) and why."""
    problems = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(body)"
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.append({"field": field, "reason": message})
    first = problems[0]
    return JSONResponse(
        {
            "error": f"{first['field']}: {first['reason']}",
            "field": first["field"],
            "problems": problems,
        },
        status_code=400,
    )


class FederatedEndpoints:
    def __init__(self, service: FederatedService, authenticator: Authenticator):
        self.service = service
        self.authenticator = authenticator

    def _principal(self, request: Request) -> Principal | Response:
        return authorize(
            self.authenticator,
            request.headers.get("authorization"),
            "query",
            request.headers.get(ON_BEHALF_OF_HEADER),
        )

    async def count(self, request: Request) -> Response:
        principal = self._principal(request)
        if isinstance(principal, Response):
            return principal
        try:
            aggregate = parse_count_query(request.query_params.multi_items())
        except FilterError as error:
            return error_response(400, str(error), error.field)
        except ValidationError as error:
            return validation_response(error)
        return await self._answer(aggregate, principal, "count")

    async def aggregate(self, request: Request) -> Response:
        principal = self._principal(request)
        if isinstance(principal, Response):
            return principal
        if request.query_params:
            name = next(iter(request.query_params))
            return error_response(400, f"{name}: parameters go in the JSON body", name)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return error_response(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return error_response(400, f"body is not JSON: {error}", "(body)")
        try:
            aggregate = AggregateRequest.model_validate(data)
        except ValidationError as error:
            return validation_response(error)
        return await self._answer(aggregate, principal, "aggregate")

    async def budget(self, request: Request) -> Response:
        principal = self._principal(request)
        if isinstance(principal, Response):
            return principal
        settings = self.service.settings.dp
        if not settings.enabled:
            return JSONResponse({"differential_privacy": False})
        spent = await run_in_threadpool(self.service.ledger.spent, principal.person)
        return JSONResponse(
            {
                "differential_privacy": True,
                "epsilon_budget": settings.epsilon_budget_per_client,
                "epsilon_spent": spent,
                "epsilon_per_query": settings.epsilon_per_query,
            }
        )

    async def _answer(
        self, aggregate: AggregateRequest, principal: Principal, endpoint: str
    ) -> Response:
        try:
            # One budget per person: the person is the client charged; the audit entry also
            # names the credential that asked (the context is copied into the worker thread).
            with asked_by(principal.name, principal.person):
                answer = await run_in_threadpool(
                    self.service.answer, aggregate, principal.person, endpoint
                )
        except RequestError as error:
            return error_response(400, str(error), error.field)
        except FilterError as error:
            return error_response(400, str(error), error.field)
        except Refused as error:
            return error_response(403, str(error))
        return JSONResponse(answer)


def federated_routes(
    index: FindingsIndex, settings: FederatedSettings, authenticator: Authenticator
) -> list[BaseRoute]:
    """The routes to mount at ``/federated/v1`` (``Mount("/federated/v1", routes=...)``)."""
    endpoints = FederatedEndpoints(FederatedService(index, settings), authenticator)
    return [
        Route("/count", endpoints.count, methods=["GET"]),
        Route("/aggregate", endpoints.aggregate, methods=["POST"]),
        Route("/budget", endpoints.budget, methods=["GET"]),
    ]
