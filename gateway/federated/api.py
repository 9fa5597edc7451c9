"""The Starlette routes of ``/federated/v1`` (openapi/federated.yaml).

- ``GET  /count``: a count, the cohort given as QIDO-style query parameters;
- ``POST /aggregate``: any aggregate, the cohort and aggregate given as JSON;
- ``GET  /budget``: the calling client's privacy budget.

Every route needs the ``query`` role (``admin`` has it too). Answers are aggregates only; bad
input is a 400 naming the field, a refusal by disclosure control a 403 with its reason.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.auth import Authenticator, Principal, authorize
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
        return authorize(self.authenticator, request.headers.get("authorization"), "query")

    async def _invalid(self, principal: Principal, endpoint: str, response: Response) -> Response:
        """Audit a request refused before the service saw it (as the service audits the ones
        it refuses): every question is in the audit log, whatever became of it. The reason
        and field are written, not the request: what was sent may hold an identifier."""
        assert isinstance(response, JSONResponse)
        body = json.loads(bytes(response.body))
        await run_in_threadpool(
            self.service.audit.record,
            client=principal.name,
            endpoint=endpoint,
            status="invalid",
            http_status=response.status_code,
            field=body.get("field"),
            reason=body["error"],
            epsilon_spent=0.0,
        )
        return response

    async def count(self, request: Request) -> Response:
        principal = self._principal(request)
        if isinstance(principal, Response):
            return principal
        try:
            aggregate = parse_count_query(request.query_params.multi_items())
        except FilterError as error:
            return await self._invalid(
                principal, "count", error_response(400, str(error), error.field)
            )
        except ValidationError as error:
            return await self._invalid(principal, "count", validation_response(error))
        return await self._answer(aggregate, principal, "count")

    async def aggregate(self, request: Request) -> Response:
        principal = self._principal(request)
        if isinstance(principal, Response):
            return principal
        endpoint = "aggregate"
        if request.query_params:
            name = next(iter(request.query_params))
            return await self._invalid(
                principal,
                endpoint,
                error_response(400, f"{name}: parameters go in the JSON body", name),
            )
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            too_large = error_response(413, f"request body over {MAX_BODY_BYTES} bytes")
            return await self._invalid(principal, endpoint, too_large)
        try:
            data = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return await self._invalid(
                principal, endpoint, error_response(400, f"body is not JSON: {error}", "(body)")
            )
        try:
            aggregate = AggregateRequest.model_validate(data)
        except ValidationError as error:
            return await self._invalid(principal, endpoint, validation_response(error))
        return await self._answer(aggregate, principal, endpoint)

    async def budget(self, request: Request) -> Response:
        principal = self._principal(request)
        if isinstance(principal, Response):
            return principal
        settings = self.service.settings.dp
        if not settings.enabled:
            return JSONResponse({"differential_privacy": False})
        spent = await run_in_threadpool(self.service.ledger.spent, principal.name)
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
            answer = await run_in_threadpool(
                self.service.answer, aggregate, principal.name, endpoint
            )
        except RequestError as error:  # audited by the service
            return error_response(400, str(error), error.field)
        except FilterError as error:
            return await self._invalid(
                principal, endpoint, error_response(400, str(error), error.field)
            )
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
