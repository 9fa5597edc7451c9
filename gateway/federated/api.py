"""The Starlette routes of ``/federated/v1`` (openapi/federated.yaml).

- ``GET  /count``: a count, the cohort given as QIDO-style query parameters;
- ``POST /aggregate``: any aggregate, the cohort and aggregate given as JSON;
- ``POST /cost``: what an ``/aggregate`` request would cost now (no look at the data);
- ``GET  /budget``: the calling person's privacy budget;
- ``GET  /vocabulary``: every value a cohort builder may offer, a rare one never listed (the
  ``vocabulary`` aggregate over all patients: charged, cached and audited like any answer).

Every route needs the ``query`` or the ``exact`` role (``admin`` has ``query``). Answers are
aggregates only; bad input is a 400 naming the field, a refusal a 403 whose reason never
depends on the data (the role, or a spent budget).

The caller is a :class:`~gateway.auth.Principal`: a credential of the site, or a person relayed
by a hub with a signed assertion (``Fedgate-On-Behalf-Of``). Budgets belong to the person, and
every audit entry names both the credential and the person.
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.auth import (
    FEDERATED_ROLES,
    ON_BEHALF_OF_HEADER,
    Authenticator,
    Principal,
    authorize,
)
from gateway.federated.cohort import AggregateRequest, VocabularySpec
from gateway.federated.errors import MAX_BODY_BYTES, error_response, validation_response
from gateway.federated.matching import FilterError
from gateway.federated.query_params import parse_count_query
from gateway.federated.service import Asker, FederatedService, Refused, RequestError
from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex


def asker_of(principal: Principal) -> Asker:
    """The person charged and the mode of answers: exact only for the ``exact`` role."""
    return Asker(
        person=principal.person, credential=principal.name, exact="exact" in principal.roles
    )


class FederatedEndpoints:
    def __init__(self, service: FederatedService, authenticator: Authenticator):
        self.service = service
        self.authenticator = authenticator

    async def _principal(self, request: Request) -> Principal | Response:
        """The caller, if it has the ``query`` or the ``exact`` role; a credential without
        either is refused (403) and the refusal audited."""
        authorization = request.headers.get("authorization")
        on_behalf_of = request.headers.get(ON_BEHALF_OF_HEADER)
        state = request.scope.setdefault("state", {})
        result = authorize(self.authenticator, authorization, FEDERATED_ROLES, on_behalf_of, state)
        if isinstance(result, JSONResponse) and result.status_code == 403:
            caller = self.authenticator.identify(authorization, on_behalf_of, state)
            if isinstance(caller, Principal):
                await run_in_threadpool(
                    self.service.audit.record,
                    client=caller.name,
                    person=caller.person,
                    endpoint=request.url.path.rsplit("/", 1)[-1],
                    status="refused",
                    reason=json.loads(bytes(result.body))["error"],
                    epsilon_spent=0.0,
                )
        return result

    async def _invalid(self, principal: Principal, endpoint: str, response: Response) -> Response:
        """Audit a request refused before the service saw it (as the service audits the ones
        it refuses): every question is in the audit log, whatever became of it. The reason
        and field are written, not the request: what was sent may hold an identifier."""
        assert isinstance(response, JSONResponse)
        body = json.loads(bytes(response.body))
        asker = asker_of(principal)
        await run_in_threadpool(
            self.service.audit.record,
            client=asker.credential,
            person=asker.person,
            endpoint=endpoint,
            status="invalid",
            http_status=response.status_code,
            field=body.get("field"),
            reason=body["error"],
            epsilon_spent=0.0,
        )
        return response

    async def count(self, request: Request) -> Response:
        principal = await self._principal(request)
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
        principal = await self._principal(request)
        if isinstance(principal, Response):
            return principal
        aggregate = await self._aggregate_body(request)
        if isinstance(aggregate, Response):
            return await self._invalid(principal, "aggregate", aggregate)
        return await self._answer(aggregate, principal, "aggregate")

    @staticmethod
    async def _aggregate_body(request: Request) -> AggregateRequest | Response:
        """The JSON body of ``/aggregate`` and ``/cost``, or the 400/413 saying what is wrong."""
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
            return AggregateRequest.model_validate(data)
        except ValidationError as error:
            return validation_response(error)

    async def cost(self, request: Request) -> Response:
        principal = await self._principal(request)
        if isinstance(principal, Response):
            return principal
        aggregate = await self._aggregate_body(request)
        if isinstance(aggregate, Response):
            return await self._invalid(principal, "cost", aggregate)
        try:
            cost = await run_in_threadpool(self.service.cost, aggregate, asker_of(principal))
        except (RequestError, FilterError) as error:
            return error_response(400, str(error), error.field)
        except Refused as error:
            return error_response(403, str(error))
        return JSONResponse(cost)

    async def budget(self, request: Request) -> Response:
        principal = await self._principal(request)
        if isinstance(principal, Response):
            return principal
        return JSONResponse(await run_in_threadpool(self.service.budget, asker_of(principal)))

    async def vocabulary(self, request: Request) -> Response:
        principal = await self._principal(request)
        if isinstance(principal, Response):
            return principal
        if request.query_params:
            name = next(iter(request.query_params))
            reason = (
                f"{name}: the vocabulary takes no parameters (a cohort's vocabulary: "
                "POST /aggregate with the aggregate kind 'vocabulary')"
            )
            return await self._invalid(principal, "vocabulary", error_response(400, reason, name))
        question = AggregateRequest(aggregate=VocabularySpec())
        return await self._answer(question, principal, "vocabulary")

    async def _answer(
        self, aggregate: AggregateRequest, principal: Principal, endpoint: str
    ) -> Response:
        try:
            answer = await run_in_threadpool(
                self.service.answer, aggregate, asker_of(principal), endpoint
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
        Route("/cost", endpoints.cost, methods=["POST"]),
        Route("/budget", endpoints.budget, methods=["GET"]),
        Route("/vocabulary", endpoints.vocabulary, methods=["GET"]),
    ]
