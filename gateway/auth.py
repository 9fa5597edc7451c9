"""Who is calling: bearer tokens per client, or OIDC JWTs, with roles.

Tokens are configured only as their SHA-256 (``auth.clients[].token_sha256``), so the settings
file holds no usable secret. JWTs (``auth.oidc``) are verified against the identity provider's
JWKS (signature, ``exp``, ``nbf``, ``iss``, ``aud``; RFC 7519, RFC 7517) with PyJWT; their roles
come from a claim. With neither configured, authentication is off and the gateway refuses to
listen anywhere but loopback (see ``gateway.commands``).

Roles: ``admin`` may use everything; ``query`` may use only the federated aggregate API.
:func:`authorize` and :class:`RequireRole` enforce a role on a request or on a whole mounted
application (e.g. ``/dicomweb`` and ``/jobs`` need ``admin``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import structlog
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from starlette.responses import JSONResponse
    from starlette.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger(__name__)

Role = Literal["query", "exact", "admin"]
ROLES: frozenset[str] = frozenset(get_args(Role))


class AuthClient(BaseModel):
    """A client of the gateway, identified by a bearer token stored only as its SHA-256."""

    model_config = ConfigDict(extra="forbid")

    name: str
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    roles: list[Role] = Field(default_factory=lambda: list[Role](["admin"]))


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


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: list[AuthClient] = Field(default_factory=list)
    oidc: OidcSettings | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.clients) or self.oidc is not None


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        # admin implies every role but `exact`: exact answers are only ever given by choice.
        return role in self.roles or ("admin" in self.roles and role != "exact")


#: The caller when authentication is off (loopback only): may do everything.
ANONYMOUS_ADMIN = Principal(name="anonymous", roles=frozenset({"admin"}))


class Authenticator:
    """Turns an ``Authorization`` header into a Principal, or None when it is not valid."""

    def __init__(self, settings: AuthSettings):
        self.settings = settings
        self._jwks: Any = None

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
                return Principal(name=client.name, roles=frozenset(client.roles))
        if self.settings.oidc is not None and token.count(".") == 2:
            return self._verify_jwt(token, self.settings.oidc)
        return None

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
        return Principal(name=f"oidc:{name}", roles=granted)


#: The roles that may ask federated questions: noisy answers (query) or exact ones (exact).
FEDERATED_ROLES: tuple[Role, ...] = ("query", "exact")


def authorize(
    authenticator: Authenticator, authorization: str | None, role: Role | tuple[Role, ...]
) -> Principal | JSONResponse:
    """The caller if it has ``role`` (one of them, for a tuple), else the 401 (not
    authenticated) or 403 response."""
    from starlette.responses import JSONResponse

    principal = authenticator.authenticate(authorization)
    if principal is None:
        return JSONResponse(
            {"error": "authentication required: a valid bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="fedgate"'},
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
        header = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        result = authorize(self.authenticator, header, self.role)
        if isinstance(result, Principal):
            scope.setdefault("state", {})["principal"] = result
            await self.app(scope, receive, send)
        else:
            await result(scope, receive, send)
