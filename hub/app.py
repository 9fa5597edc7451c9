"""The hub: one question to many sites at once, one combined answer (``fedgate hub``).

The hub speaks the sites' own ``/federated/v1`` API, so a hub can be a site of another hub.
Each question is validated here first (a bad question is a 400 before any site is asked), then
sent to every site concurrently, each with its own timeout. The answer lists every site's
status (``ok``, ``suppressed``, ``timeout``, ``error``, ``refused``) and result, and a combined
result over the sites that answered: counts summed, histogram cells merged, means and variances
pooled from per-site counts. A suppressed site cell is never guessed: it contributes the bounds
it stands for (0 to k-1 patients), so a combined number with a suppressed part is an interval
(``lower``/``upper``), not a count.

Each site charges the analyst, not the hub: with every question the hub sends its own bearer
token for the site (``sites[].token``, a credential with the ``hub`` role there) and an assertion
of the analyst's person signed with the hub's key (``signing_key_file``; see
:mod:`gateway.hub_assertion`), addressed to that site by its name here (``sites[].name``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from dashboard import dashboard_routes
from gateway.auth import (
    FEDERATED_ROLES,
    ON_BEHALF_OF_HEADER,
    RELAYABLE_ROLES,
    Authenticator,
    AuthSettings,
    Principal,
    authorize,
)
from gateway.federated.audit import AuditLog
from gateway.federated.cohort import AggregateRequest
from gateway.federated.errors import MAX_BODY_BYTES, error_response, validation_response
from gateway.federated.matching import FilterError
from gateway.federated.query_params import parse_count_query
from gateway.hub_assertion import PrivateKey, load_private_key, sign_assertion
from hub.learning.settings import LearningSettings
from observability import LogSettings, RequestContextMiddleware
from serviceconfig import ConfigError, describe_validation_error, read_settings_file
from tlsconfig import ClientTls, ServerTls, client_context

log = structlog.get_logger(__name__)

T = TypeVar("T")

SiteStatus = Literal["ok", "suppressed", "timeout", "error", "refused"]


class SiteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The site's name here; also the audience (``aud``) of the assertions the hub sends it,
    #: so the site configures this name as ``auth.hubs[].audience``.
    name: Annotated[str, Field(min_length=1, max_length=64)]
    #: The site's federated API root, e.g. ``https://gw.site-a.example/federated/v1``.
    url: Annotated[str, Field(pattern=r"^https?://")]
    token: SecretStr | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    #: Towards an https:// site: ``{ca, certificate, key}``: the CA that signs the site's
    #: certificate (default: the public ones) and the hub's client certificate for sites that
    #: require one (their ``listen.tls.client_ca``).
    tls: ClientTls | None = None


class HubListen(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8090
    #: HTTPS: ``{certificate, key, client_ca, require_client_certificate}`` (docs/tls.md).
    tls: ServerTls | None = None


class HubSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The hub's name: the issuer (``iss``) of its assertions, ``auth.hubs[].name`` at the sites.
    name: Annotated[str, Field(min_length=1, max_length=200)] = "fedgate-hub"
    #: The hub's private key (PEM, Ed25519 from ``fedgate hub keygen``) to sign assertions of
    #: who is asking. None: no assertion is sent, and a site sees only the hub's credential
    #: (a site that gives the hub the ``hub`` role then refuses its questions).
    signing_key_file: Path | None = None
    listen: HubListen = Field(default_factory=HubListen)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    sites: list[SiteSettings] = Field(min_length=1)
    #: Per-site timeout unless a site sets its own.
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    #: Connections the hub keeps open to each site: as many questions as this are asked of
    #: a site at once (more wait for a connection, within the site's timeout). Each is an
    #: open file: 100 sites at 8 stay within the common limit of 1,024 (``ulimit -n``).
    connections_per_site: Annotated[int, Field(ge=1, le=1000)] = 8
    #: The hub's own append-only audit log (JSON lines): every question it relayed, the
    #: client, each site's status and the combined answer as released. None: no log.
    audit_log: Path | None = None
    #: Federated learning: the hub's Flower SuperLink (``fedgate learn run``, docs/learning.md).
    learning: LearningSettings = Field(default_factory=LearningSettings)
    #: ``{level, json}``: the hub's log lines (JSON on stderr by default, as the sites').
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def load(cls, path: Path) -> HubSettings:
        """The hub's YAML file, or ConfigError naming the file or the key (a site by name:
        ``sites[a].url``)."""
        data = read_settings_file(path)
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(
                "invalid configuration: " + describe_validation_error(error, data)
            ) from error

    def signing_key(self) -> PrivateKey | None:
        """The key from ``signing_key_file`` (ValueError with the reason if unusable)."""
        if self.signing_key_file is None:
            return None
        try:
            pem = self.signing_key_file.read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read {self.signing_key_file}: {error.strerror}") from None
        return load_private_key(pem)


# -- merging -------------------------------------------------------------------------------------

_BOUND = re.compile(r"^<(\d+)$")


def value_bounds(entry: dict[str, Any], level: str) -> tuple[float, float | None]:
    """(lower, upper) of one count or cell as a site released it; upper None if unbounded."""
    if entry.get("count") is not None:
        return float(entry["count"]), float(entry["count"])
    if "lower" in entry:  # a hub's combined interval
        upper = entry.get("upper")
        return float(entry["lower"]), None if upper is None else float(upper)
    match = _BOUND.match(str(entry.get("bound", "")))
    if match and level == "patients":
        return 0.0, float(int(match.group(1)) - 1)
    # Suppressed below k *patients*: k-1 patients may hold any number of studies or series.
    return 0.0, None


def combine_counts(entries: list[dict[str, Any]], level: str) -> dict[str, Any]:
    """One count from the sites' counts: a sum, with the 95 % interval of the noisy ones
    combined (their noises are independent), or an interval when a part was suppressed."""
    lower, exact = 0.0, True
    upper: float | None = 0.0
    noisy, variance = False, 0.0
    for entry in entries:
        low, high = value_bounds(entry, level)
        exact = exact and entry.get("count") is not None
        lower += low
        upper = None if upper is None or high is None else upper + high
        if entry.get("count") is not None and "interval" in entry:
            noisy = True
            interval_low, interval_high = entry["interval"]
            variance += ((interval_high - interval_low) / 2) ** 2
    if exact:
        combined: dict[str, Any] = {"count": round(lower)}
        if noisy:
            half = math.sqrt(variance)
            combined["interval"] = [max(0, math.floor(lower - half)), math.ceil(lower + half)]
        return combined
    return {
        "count": None,
        "suppressed": True,
        "lower": round(lower),
        "upper": None if upper is None else round(upper),
    }


def _cell_key(cell: dict[str, Any]) -> str:
    return json.dumps([cell.get("value"), cell.get("row"), cell.get("column")], sort_keys=True)


def unlisted(answer: dict[str, Any]) -> dict[str, Any]:
    """What a site that did not list a value of an open category says about it: fewer than k
    patients hold it (exact answers: they are in its "(other)"), or its noisy count did not
    clear the threshold (noisy answers), or none do: either way, a count below that bound."""
    bound = answer.get("threshold", answer.get("min_cell_size", 10))
    return {"count": None, "suppressed": True, "bound": f"<{bound}"}


def combine_tables(answers: list[dict[str, Any]], level: str) -> dict[str, Any]:
    per_site: list[dict[str, dict[str, Any]]] = []
    labels: dict[str, dict[str, Any]] = {}
    for answer in answers:
        site_cells = {}
        for cell in answer.get("cells", []):
            key = _cell_key(cell)
            site_cells[key] = cell
            labels.setdefault(key, {k: cell[k] for k in ("value", "row", "column") if k in cell})
        per_site.append(site_cells)
    cells = []
    for key, label in labels.items():
        entries = []
        for answer, site_cells in zip(answers, per_site, strict=True):
            entries.append(site_cells.get(key, unlisted(answer)))
        # A suppressed cell without a bound may hold any number (it may be suppressed to
        # protect another): it adds 0 to the lower bound and makes the upper bound unknown.
        cells.append({**label, **combine_counts(entries, level)})
    return {
        "total": combine_counts([a["total"] for a in answers if "total" in a], level),
        "dimensions": answers[0].get("dimensions", []),
        "cells": cells,
    }


def combine_summaries(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled mean and standard deviation from each site's n, mean and sd."""
    usable = [a for a in answers if a.get("n") and a.get("mean") is not None]
    n = sum(a["n"] for a in usable)
    result: dict[str, Any] = {
        "sites_pooled": len(usable),
        "sites_suppressed": len(answers) - len(usable),
    }
    if n == 0:
        return {**result, "n": None, "mean": None, "sd": None, "suppressed": True}
    mean = sum(a["n"] * a["mean"] for a in usable) / n
    squares = sum(
        (a["n"] - 1) * (a["sd"] or 0.0) ** 2 + a["n"] * (a["mean"] - mean) ** 2 for a in usable
    )
    return {**result, "n": n, "mean": mean, "sd": math.sqrt(squares / (n - 1)) if n > 1 else 0.0}


#: The members of a released count; the others of a vocabulary entry name its value.
_COUNT_MEMBERS = frozenset({"count", "interval", "suppressed", "bound", "lower", "upper", "sites"})


def combine_vocabularies(answers: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The union of the sites' vocabularies: per list, every value any site listed, with the
    sites that listed it and its count combined as a table's cell is (a site that did not list
    it holds fewer patients than its threshold or minimum cell size: an interval)."""
    merged: dict[str, dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]]] = {}
    for answer, name in zip(answers, names, strict=True):
        for list_name, entries in answer.get("vocabulary", {}).items():
            values = merged.setdefault(list_name, {})
            for entry in entries:
                label = {k: v for k, v in entry.items() if k not in _COUNT_MEMBERS}
                key = json.dumps(label, sort_keys=True)
                values.setdefault(key, (label, {}))[1][name] = entry
    vocabulary: dict[str, list[dict[str, Any]]] = {}
    for list_name, values in merged.items():
        vocabulary[list_name] = []
        for key in sorted(values):
            label, by_site = values[key]
            entries = [
                by_site.get(name, unlisted(answer))
                for answer, name in zip(answers, names, strict=True)
            ]
            vocabulary[list_name].append(
                {**label, **combine_counts(entries, "patients"), "sites": sorted(by_site)}
            )
    return {"vocabulary": vocabulary}


def combine(
    kind: str, level: str, answers: list[dict[str, Any]], names: list[str]
) -> dict[str, Any]:
    """The combined answer of the sites that answered (``names`` are theirs)."""
    if not answers:
        return {"count": None, "error": "no site answered"} if kind == "count" else {}
    if kind == "count":
        return combine_counts(answers, level)
    if kind in ("histogram", "crosstab"):
        return combine_tables(answers, level)
    if kind == "vocabulary":
        return combine_vocabularies(answers, names)
    return combine_summaries(answers)


def affordable(answer: dict[str, Any]) -> bool:
    """Whether a site's ``/cost`` answer says the question can be asked there: its own
    ``affordable`` (noisy answers, or a hub's), or exact questions left."""
    if "affordable" in answer:
        return bool(answer["affordable"])
    return int(answer.get("questions_remaining", 0)) > 0


# -- asking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One HTTP request the hub sends every site, below the site's federated API root."""

    method: Literal["GET", "POST"]
    #: Below the site's ``url``: ``/count``, ``/aggregate``, ...
    path: str
    #: Who is asking (each site gets the hub's assertion of this person).
    principal: Principal
    params: list[tuple[str, str]] = field(default_factory=list)
    #: The body (POST), encoded once for all sites where it is the same.
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Reply:
    """What the hub takes as a site's reply without asking it (e.g. "not installed there")."""

    status: int
    body: bytes


#: What the hub asks: one question for every site, or each site's own (or a reply in its
#: place, when there is nothing to ask it).
Ask = Question | Callable[[SiteSettings], Question | Reply]


def json_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def proxy_for(url: str) -> str | None:
    """The proxy to reach ``url`` through, from ``HTTP_PROXY``/``HTTPS_PROXY`` and
    ``NO_PROXY`` (as curl and httpx read them), or None."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class Hub:
    """Asks every site a question at once, each within its timeout, over connections kept
    open between questions."""

    def __init__(self, settings: HubSettings):
        self.settings = settings
        self.signing_key = settings.signing_key()
        self._session: aiohttp.ClientSession | None = None
        # Looked up once: aiohttp's trust_env looks at the environment for every request
        # (about 0.2 ms each, as much as the rest of the request).
        self.proxies = {site.name: proxy_for(site.url) for site in settings.sites}
        # A site's CA and the hub's certificate for it (sites[].tls): one context for each
        # distinct setting, passed with each request (aiohttp keeps connections apart by it).
        contexts: dict[ClientTls | None, ssl.SSLContext | bool] = {}
        self.tls: dict[str, ssl.SSLContext | bool] = {}
        for site in settings.sites:
            if site.tls not in contexts:
                contexts[site.tls] = client_context(site.tls)
            self.tls[site.name] = contexts[site.tls]
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        """The hub's HTTP client (created in the running event loop, on first use).

        aiohttp rather than httpx: at 100 sites, httpx spent about 1 ms of CPU per site and
        question (its pool, anyio and h11 layers), aiohttp a quarter of that (bench/hub.py), and
        the hub's CPU is what a question waits for beyond the slowest site. One connector, at
        most ``connections_per_site`` connections per site, all kept alive between questions.
        """
        loop = asyncio.get_running_loop()
        # A session belongs to the loop it was made in: the app served again in another loop
        # (a test client's second run) gets a new one.
        if self._session is None or self._session_loop is not loop:
            self._session_loop = loop
            per_site = self.settings.connections_per_site
            connector = aiohttp.TCPConnector(
                limit=per_site * len(self.settings.sites), limit_per_host=per_site
            )
            # No timeout of aiohttp's own: each site's is the deadline in _ask_site.
            timeout = aiohttp.ClientTimeout(total=None)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def closing(self, work: Awaitable[T]) -> T:
        """``work``'s result, the hub's connections closed after it (a command's one run)."""
        try:
            return await work
        finally:
            await self.aclose()

    def headers(self, site: SiteSettings, principal: Principal) -> dict[str, str]:
        """The hub's own credential for ``site``, its assertion of who is asking, and the id
        of the request being relayed (the site logs its answer under the same id)."""
        headers = {}
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id is not None:
            headers["X-Request-ID"] = str(request_id)
        if site.token is not None:
            headers["Authorization"] = f"Bearer {site.token.get_secret_value()}"
        if self.signing_key is not None:
            # The analyst's federated roles here; the site caps them by the hub's own there.
            roles = [role for role in RELAYABLE_ROLES if role in principal.roles]
            if principal.has("query") and "query" not in roles:
                roles.append("query")  # an administrator of the hub may ask
            headers[ON_BEHALF_OF_HEADER] = sign_assertion(
                self.signing_key, self.settings.name, principal.person, site.name, roles
            )
        return headers

    async def ask_each(self, question: Ask) -> list[dict[str, Any]]:
        """Every site's status and answer to ``question``, asked concurrently."""
        # Every site's time counts from now, not from when its turn in the fan-out came: at a
        # hundred sites the last one is sent its question tens of milliseconds later (more
        # on a busy machine), and a hung site must cost its timeout and no more.
        asked = asyncio.get_running_loop().time()
        sites = self.settings.sites
        return list(await asyncio.gather(*(self._ask_site(question, s, asked) for s in sites)))

    async def ask(self, question: Ask, kind: str, level: str) -> dict[str, Any]:
        results = await self.ask_each(question)
        answered = [r for r in results if r["status"] in ("ok", "suppressed")]
        answers = [r["answer"] for r in answered]
        combined = combine(kind, level, answers, [r["name"] for r in answered])
        return {
            "level": level,
            "kind": kind,
            **combined,
            "complete": len(answers) == len(results),
            "sites": results,
        }

    async def _send(self, question: Question, site: SiteSettings) -> tuple[int, bytes]:
        headers = self.headers(site, question.principal)
        if question.body is not None:
            headers["Content-Type"] = question.content_type
        async with self.session().request(
            question.method,
            f"{site.url.rstrip('/')}{question.path}",
            params=question.params,
            data=question.body,
            headers=headers,
            proxy=self.proxies[site.name],
            ssl=self.tls[site.name],
        ) as response:
            return response.status, await response.read()

    async def _ask_site(self, ask: Ask, site: SiteSettings, asked: float) -> dict[str, Any]:
        """``site``'s status and answer, given up on ``timeout`` after ``asked`` (loop time)."""
        timeout = site.timeout_seconds or self.settings.timeout_seconds
        loop = asyncio.get_running_loop()
        result: dict[str, Any] = {"name": site.name}
        try:
            # One deadline over everything (waiting for a free connection, connecting,
            # sending, the whole answer).
            async with asyncio.timeout_at(asked + timeout):
                question = ask(site) if callable(ask) else ask
                if isinstance(question, Reply):
                    status, body = question.status, question.body
                else:
                    status, body = await self._send(question, site)
        except TimeoutError:
            result.update(status="timeout", error=f"no answer within {timeout:g} s")
        except aiohttp.ClientError as error:
            result.update(status="error", error=f"{type(error).__name__}: {error}")
        else:
            result.update(_interpret(status, body))
        result["seconds"] = round(loop.time() - asked, 4)
        if result["status"] not in ("ok", "suppressed"):
            log.info(
                "hub.site_failed",
                site=site.name,
                status=result["status"],
                error=result.get("error"),
            )
        return result


def _interpret(status_code: int, content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except ValueError:  # UnicodeDecodeError included
        body = None
    if 200 <= status_code < 300 and isinstance(body, dict):
        status: SiteStatus = "suppressed" if body.get("suppressed") else "ok"
        return {"status": status, "answer": body}
    reason = body.get("error") if isinstance(body, dict) else content[:200].decode(errors="replace")
    if status_code == 403:
        return {"status": "refused", "error": reason}
    return {"status": "error", "error": f"HTTP {status_code}: {reason}"}


def hub_app(settings: HubSettings) -> Starlette:
    """The hub's ASGI application: ``/federated/v1`` (``/count``, ``/aggregate``, ``/cost``,
    ``/budget``, ``/vocabulary``) and ``/healthz``."""
    hub = Hub(settings)
    authenticator = Authenticator(settings.auth)
    audit = AuditLog(settings.audit_log) if settings.audit_log is not None else None

    def released(
        principal: Principal, question: dict[str, Any], answer: dict[str, Any]
    ) -> Response:
        if audit is not None:
            answered = any(site["status"] in ("ok", "suppressed") for site in answer["sites"])
            audit.record(
                client=principal.name,
                person=principal.person,
                status="answered" if answered else "no site answered",
                question=question,
                answer=answer,
            )
        return JSONResponse(answer)

    def asker(request: Request) -> Principal | Response:
        # A hub can be a site of another hub: it accepts that hub's assertions like a site.
        return authorize(
            authenticator,
            request.headers.get("authorization"),
            FEDERATED_ROLES,
            request.headers.get(ON_BEHALF_OF_HEADER),
            request.scope.setdefault("state", {}),
        )

    async def count(request: Request) -> Response:
        principal = asker(request)
        if isinstance(principal, Response):
            return principal
        params = request.query_params.multi_items()
        try:
            parsed = parse_count_query(params)
        except FilterError as error:
            return error_response(400, str(error), error.field)
        except ValidationError as error:
            return validation_response(error)

        ask = Question("GET", "/count", principal, params=list(params))
        answer = await hub.ask(ask, "count", parsed.level)
        return released(principal, {"count": params}, answer)

    async def question(
        request: Request,
    ) -> tuple[Principal, AggregateRequest, dict[str, Any]] | Response:
        """Who asks and the ``/aggregate`` (or ``/cost``) body as the sites get it, checked
        here before any site is asked; or the 401/403/400/413 saying why not."""
        principal = asker(request)
        if isinstance(principal, Response):
            return principal
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return error_response(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            parsed = AggregateRequest.model_validate(json.loads(body or b"{}"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return error_response(400, f"body is not JSON: {error}", "(body)")
        except ValidationError as error:
            return validation_response(error)
        return principal, parsed, parsed.model_dump(mode="json", exclude_none=True)

    async def aggregate(request: Request) -> Response:
        asked = await question(request)
        if isinstance(asked, Response):
            return asked
        principal, parsed, payload = asked
        ask = Question("POST", "/aggregate", principal, body=json_body(payload))
        answer = await hub.ask(ask, parsed.aggregate.kind, parsed.level)
        return released(principal, {"aggregate": payload}, answer)

    async def vocabulary(request: Request) -> Response:
        principal = asker(request)
        if isinstance(principal, Response):
            return principal
        if request.query_params:
            name = next(iter(request.query_params))
            reason = f"{name}: the vocabulary takes no parameters"
            return error_response(400, reason, name)
        ask = Question("GET", "/vocabulary", principal)
        answer = await hub.ask(ask, "vocabulary", "patients")
        return released(principal, {"vocabulary": {}}, answer)

    async def cost(request: Request) -> Response:
        """Each site's cost of the question for the person, and whether all can pay it."""
        asked = await question(request)
        if isinstance(asked, Response):
            return asked
        principal, _, payload = asked
        results = await hub.ask_each(Question("POST", "/cost", principal, body=json_body(payload)))
        answered = [r["answer"] for r in results if r["status"] == "ok"]
        return JSONResponse(
            {
                # Each site charges its own ledger: this is the sum over the sites, each
                # site's part is in its answer.
                "epsilon": round(sum(float(a.get("epsilon", 0.0)) for a in answered), 6),
                "affordable": bool(answered) and all(affordable(a) for a in answered),
                "complete": len(answered) == len(results),
                "sites": results,
            }
        )

    async def budget(request: Request) -> Response:
        """The person's budget at every site (each site keeps its own)."""
        principal = asker(request)
        if isinstance(principal, Response):
            return principal
        results = await hub.ask_each(Question("GET", "/budget", principal))
        complete = all(r["status"] == "ok" for r in results)
        return JSONResponse({"person": principal.person, "complete": complete, "sites": results})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "sites": len(settings.sites)})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Mount(
                "/federated/v1",
                routes=[
                    Route("/count", count, methods=["GET"]),
                    Route("/aggregate", aggregate, methods=["POST"]),
                    Route("/cost", cost, methods=["POST"]),
                    Route("/budget", budget, methods=["GET"]),
                    Route("/vocabulary", vocabulary, methods=["GET"]),
                ],
            ),
            # The cohort dashboard over every site (docs/dashboard.md).
            *dashboard_routes(
                "hub",
                auth_enabled=settings.auth.enabled,
                oidc_configured=settings.auth.oidc is not None,
                oidc_login=settings.auth.oidc.dashboard_login() if settings.auth.oidc else None,
            ),
        ],
        middleware=[Middleware(RequestContextMiddleware, quiet_paths=("/healthz",))],
        lifespan=lambda app: _closing(hub),
    )


@contextlib.asynccontextmanager
async def _closing(hub: Hub) -> AsyncIterator[None]:
    yield
    await hub.aclose()
