"""Who is calling: bearer tokens per client, or OIDC JWTs, with roles.

Tokens are configured only as their SHA-256 (``auth.clients[].token_sha256``), so the settings
file holds no usable secret. JWTs (``auth.oidc``) are verified against the identity provider's
JWKS (signature, ``exp``, ``nbf``, ``iss``, ``aud``; RFC 7519, RFC 7517) with PyJWT; their roles
come from a claim. With neither configured, authentication is off and the gateway refuses to
listen anywhere but loopback (see ``gateway.commands``).

Every caller is a :class:`Principal`: ``name`` is the credential (what the audit log names),
``person`` the human being whose privacy budget an answer is charged to. A token's person is its
``person`` (default: its name), so two tokens of one person share one budget; an OIDC caller is
``oidc:<sub>``; a question relayed by a hub is the person the hub asserts
(:mod:`gateway.hub_assertion`).

Roles:

- ``admin`` may use everything: :meth:`Principal.has` says yes for every role. Two decisions are
  taken on the roles *granted explicitly* instead (``role in principal.roles``): whether answers
  are exact (``exact``; an administrator gets noisy answers like any analyst unless also given
  ``exact``), and whether a credential relays for others (``hub``).
- ``query``: the federated aggregate API (noisy answers).
- ``exact``: exact, suppressed answers, for the site's own research office (docs/federated.md).
- ``metrics``: may scrape ``/metrics`` (and nothing else).
- ``viewer``: read-only DICOMweb (QIDO-RS and WADO-RS, ``GET``/``HEAD`` under ``/dicomweb``).
- ``forwarder``: STOW-RS only (``POST /dicomweb/studies[/{study}]``): what a PACS's forwarding
  needs, and nothing it could read back.
- ``hub``: a federation hub's credential. It is never a person itself: each of its requests must
  carry a hub assertion (``Fedgate-On-Behalf-Of``) naming the analyst, or it is refused (401).

:func:`authorize` and :class:`RequireRole` enforce a role on a request or on a whole mounted
application. Which role each route needs is one table, ``ROUTE_ROLES`` in
:mod:`gateway.middleware` (docs/roles.md).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import structlog
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from dashboard import OidcLogin
from gateway.hub_assertion import (
    AssertionLedger,
    AssertionRefused,
    PublicKey,
    load_public_key,
    verify_assertion,
)

if TYPE_CHECKING:
    from starlette.responses import JSONResponse
    from starlette.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger(__name__)

Role = Literal["query", "exact", "admin", "metrics", "hub", "viewer", "forwarder"]
ROLES: frozenset[str] = frozenset(get_args(Role))
#: The roles a hub may relay for a person: what an analyst may ask, never more.
RELAYABLE_ROLES: frozenset[Role] = frozenset({"query", "exact"})
#: The header carrying a hub's signed assertion of the person it asks for.
ON_BEHALF_OF_HEADER = "Fedgate-On-Behalf-Of"


class AuthClient(BaseModel):
    """A client of the gateway, identified by a bearer token stored only as its SHA-256."""

    model_config = ConfigDict(extra="forbid")

    name: str
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    roles: list[Role] = Field(default_factory=lambda: list[Role](["admin"]))
    #: The person who owns this token, whose privacy budget its questions spend. Default: the
    #: client's name. Give two tokens of one person the same ``person`` (and use the same
    #: string the person has at the hubs, see docs/federated.md "Persons").
    person: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class OidcSettings(BaseModel):
    """JWTs from an OpenID Connect provider, verified against its JWKS."""

    model_config = ConfigDict(extra="forbid")

    jwks_url: Annotated[str, Field(pattern=r"^https?://")]
    issuer: str
    audience: str
    #: Claim holding the roles, dotted for nested claims (Keycloak: ``realm_access.roles``).
    roles_claim: str = "roles"
    #: Claim naming the client (its privacy budget and audit entries are under this name).
    client_claim: str = "sub"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"])
    leeway_seconds: Annotated[float, Field(ge=0, le=300)] = 30.0
    jwks_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    #: The dashboard's client id at this provider: a *public* client (no secret) using the
    #: authorization code flow with PKCE (RFC 7636), redirect URI ``<this server>/ui/``. With
    #: it, ``/ui`` offers "Sign in with <provider>" beside the token form (docs/dashboard.md).
    dashboard_client_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    #: The scopes the dashboard asks for (space-separated; OIDC Core 3.1.2.1 needs ``openid``).
    dashboard_scope: Annotated[str, Field(pattern=r"(^| )openid( |$)")] = "openid"
    #: The name on the dashboard's sign-in button (default: the issuer).
    display_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    #: Where the provider's metadata is (OpenID Connect Discovery 1.0 section 4), default
    #: ``<issuer>/.well-known/openid-configuration``; its ``issuer`` must equal ``issuer``.
    discovery_url: Annotated[str, Field(pattern=r"^https?://")] | None = None

    def dashboard_login(self) -> OidcLogin | None:
        """What ``/ui`` needs for a browser sign-in, or None without ``dashboard_client_id``."""
        if self.dashboard_client_id is None:
            return None
        return OidcLogin(
            issuer=self.issuer,
            client_id=self.dashboard_client_id,
            scope=self.dashboard_scope,
            display_name=self.display_name or self.issuer,
            discovery_url=self.discovery_url,
            timeout_seconds=self.jwks_timeout_seconds,
        )


class TrustedHub(BaseModel):
    """A hub whose assertions of a person this site accepts (``auth.hubs[]``)."""

    model_config = ConfigDict(extra="forbid")

    #: The hub's name: the ``iss`` of its assertions (``name`` in the hub's settings).
    name: Annotated[str, Field(min_length=1, max_length=200)]
    #: The hub's public key, PEM (``fedgate hub keygen`` prints it), or a file holding it.
    public_key: str | None = None
    public_key_file: Path | None = None
    #: This site's name as the hub calls it (``sites[].name`` at the hub): the ``aud`` required.
    audience: Annotated[str, Field(min_length=1, max_length=200)]
    #: Run the federated analyses this hub sends and signs without asking this site's admin
    #: (docs/analysis.md). Off: each analysis waits for ``fedgate analysis approve``.
    auto_approve_analyses: bool = False
    _key: PublicKey | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_key(self) -> TrustedHub:
        if (self.public_key is None) == (self.public_key_file is None):
            raise ValueError("give exactly one of public_key and public_key_file")
        try:
            pem = (
                self.public_key.encode()
                if self.public_key is not None
                else Path(str(self.public_key_file)).read_bytes()
            )
        except OSError as error:
            raise ValueError(f"cannot read {self.public_key_file}: {error.strerror}") from None
        try:
            self._key = load_public_key(pem)
        except ValueError as error:
            raise ValueError(f"hub {self.name!r}: not a usable public key: {error}") from None
        return self

    @property
    def key(self) -> PublicKey:
        assert self._key is not None  # set by the validator
        return self._key


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: list[AuthClient] = Field(default_factory=list)
    oidc: OidcSettings | None = None
    #: Hubs whose assertions of a person this site accepts (from credentials with ``hub``).
    hubs: list[TrustedHub] = Field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.clients) or self.oidc is not None


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the credential (``name``) and the person behind it."""

    #: The credential: a token client's name, ``oidc:<sub>``, or ``<hub credential>/<person>``.
    name: str
    roles: frozenset[Role]
    #: Whose privacy budget answers are charged to (one budget per person).
    person: str

    def has(self, role: Role) -> bool:
        """May the caller use what ``role`` guards? ``admin`` may use everything.

        Exactness and relaying are not decided here: they look at ``roles`` themselves
        (``"exact" in principal.roles``, ``"hub" in principal.roles``).
        """
        return "admin" in self.roles or role in self.roles


#: RFC 9110 11.6.1: a 401 says how to authenticate.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="fedgate"'}

#: The caller when authentication is off (loopback only): may do everything.
ANONYMOUS_ADMIN = Principal(name="anonymous", roles=frozenset({"admin"}), person="anonymous")


@dataclass(frozen=True)
class Denied:
    """Why a request's credentials were not accepted: 401 (who are you?) or 403 (not you)."""

    status: Literal[401, 403]
    reason: str


class Authenticator:
    """Who is calling: :meth:`authenticate` checks the credential (``Authorization``),
    :meth:`identify` also the person a hub asserts (``Fedgate-On-Behalf-Of``)."""

    def __init__(self, settings: AuthSettings):
        self.settings = settings
        self._jwks: Any = None
        self._hubs = {hub.name: (hub.key, hub.audience) for hub in settings.hubs}
        self._assertions = AssertionLedger()

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def authenticate(self, authorization: str | None) -> Principal | None:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        digest = hashlib.sha256(token.encode()).hexdigest()
        for client in self.settings.clients:
            # Constant-time comparison: no timing oracle on the stored digests.
            if hmac.compare_digest(digest, client.token_sha256):
                return Principal(
                    name=client.name,
                    roles=frozenset(client.roles),
                    person=client.person or client.name,
                )
        if self.settings.oidc is not None and token.count(".") == 2:
            return self._verify_jwt(token, self.settings.oidc)
        return None

    def identify(
        self,
        authorization: str | None,
        on_behalf_of: str | None = None,
        request_state: dict[str, Any] | None = None,
    ) -> Principal | Denied:
        """Who is asking: the credential's own principal, or the person a hub relays for.

        ``on_behalf_of`` is the ``Fedgate-On-Behalf-Of`` header. A credential with the ``hub``
        role must send a valid one (its requests are always for someone; taking the hub for the
        person would put all its analysts on one budget); any other credential must not (403:
        it may not speak for another person). With authentication off (loopback only) there is
        no one to tell apart, and the header is ignored.

        An assertion answers one request (:class:`AssertionLedger`): sent again, it is refused
        (401). ``request_state`` is the request's ASGI ``scope["state"]``: the middleware and
        the endpoint of one request may both identify it; without it, every call is a request.
        """
        credential = self.authenticate(authorization)
        if credential is None:
            return Denied(401, "authentication required: a valid bearer token")
        if not self.enabled:
            return credential
        if on_behalf_of is None:
            if "hub" in credential.roles:
                return Denied(
                    401,
                    f"{credential.name!r} is a hub's credential: each request must carry the "
                    f"hub's signed assertion of the person asking ({ON_BEHALF_OF_HEADER})",
                )
            return credential
        if "hub" not in credential.roles:
            return Denied(
                403,
                f"{credential.name!r} lacks the 'hub' role: only a hub may ask on behalf of "
                f"a person ({ON_BEHALF_OF_HEADER})",
            )
        try:
            claims = verify_assertion(on_behalf_of.strip(), self._hubs)
        except AssertionRefused as error:
            log.info("auth.hub_assertion_rejected", credential=credential.name, reason=str(error))
            return Denied(401, f"hub assertion ({ON_BEHALF_OF_HEADER}) refused: {error}")
        # The assertions this request took already (its middleware, then its endpoint).
        taken_here: set[str] = (
            set() if request_state is None else request_state.setdefault("hub_assertions", set())
        )
        if claims["jti"] not in taken_here:
            if not self._assertions.take(claims):
                log.info("auth.hub_assertion_replayed", credential=credential.name)
                return Denied(
                    401,
                    f"hub assertion ({ON_BEHALF_OF_HEADER}) refused: already used (an assertion "
                    "answers one request; the hub signs a new one for each)",
                )
            taken_here.add(claims["jti"])
        person: str = claims["sub"]
        # The analyst gets what the hub granted them, capped by what the site granted the hub.
        roles = frozenset(
            role for role in RELAYABLE_ROLES if role in claims["roles"] and role in credential.roles
        )
        return Principal(name=f"{credential.name}/{person}", roles=roles, person=person)

    def _verify_jwt(self, token: str, oidc: OidcSettings) -> Principal | None:
        import jwt  # PyJWT: loaded only where OIDC is configured

        if self._jwks is None:
            self._jwks = jwt.PyJWKClient(
                oidc.jwks_url, cache_keys=True, lifespan=300, timeout=int(oidc.jwks_timeout_seconds)
            )
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=oidc.algorithms,
                audience=oidc.audience,
                issuer=oidc.issuer,
                leeway=oidc.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as error:
            log.info("auth.jwt_rejected", reason=str(error))
            return None
        roles: Any = claims
        for part in oidc.roles_claim.split("."):
            roles = roles.get(part) if isinstance(roles, dict) else None
        granted: frozenset[Role] = frozenset(
            r for r in (roles if isinstance(roles, list) else []) if r in ROLES
        )
        name = claims.get(oidc.client_claim)
        if not isinstance(name, str) or not name:
            log.info("auth.jwt_rejected", reason=f"no {oidc.client_claim!r} claim")
            return None
        return Principal(name=f"oidc:{name}", roles=granted, person=f"oidc:{name}")


#: The roles that may ask federated questions: noisy answers (query) or exact ones (exact).
FEDERATED_ROLES: tuple[Role, ...] = ("query", "exact")


def authorize(
    authenticator: Authenticator,
    authorization: str | None,
    role: Role | tuple[Role, ...],
    on_behalf_of: str | None = None,
    request_state: dict[str, Any] | None = None,
) -> Principal | JSONResponse:
    """The caller if it has ``role`` (one of them, for a tuple), else the 401 (not
    authenticated) or 403 response.

    ``on_behalf_of``, ``request_state``: a hub's assertion of the person asking, and the
    request's ASGI state (see :meth:`Authenticator.identify`).
    """
    from starlette.responses import JSONResponse

    principal = authenticator.identify(authorization, on_behalf_of, request_state)
    if isinstance(principal, Denied):
        return JSONResponse(
            {"error": principal.reason},
            status_code=principal.status,
            headers=CHALLENGE if principal.status == 401 else None,
        )
    roles = role if isinstance(role, tuple) else (role,)
    if not any(principal.has(r) for r in roles):
        needed = " or ".join(repr(r) for r in roles)
        return JSONResponse(
            {"error": f"client {principal.name!r} lacks the {needed} role"}, status_code=403
        )
    return principal


class RequireRole:
    """ASGI middleware: every HTTP request to ``app`` needs ``role`` (401/403 otherwise).

    ``Mount("/dicomweb", app=RequireRole(dicomweb_app, authenticator, "admin"))`` keeps
    ``query`` clients away from images and jobs.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator, role: Role):
        self.app = app
        self.authenticator = authenticator
        self.role = role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        state = scope.setdefault("state", {})
        result = authorize(
            self.authenticator,
            headers.get("authorization"),
            self.role,
            headers.get(ON_BEHALF_OF_HEADER),
            state,
        )
        if isinstance(result, Principal):
            state["principal"] = result
            await self.app(scope, receive, send)
        else:
            await result(scope, receive, send)
