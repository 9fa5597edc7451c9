"""A real OpenID provider for tests: a JWKS, and a minimal authorization server.

Served by uvicorn on a loopback port (:class:`tests.federated.servers.ThreadedServer`):

- ``/certs``: the JWKS (RFC 7517) whose key signs every token it issues;
- ``/.well-known/openid-configuration``: its metadata (OpenID Connect Discovery 1.0);
- ``/authorize``: the authorization endpoint of the code flow (RFC 6749 4.1) for public
  clients with PKCE (RFC 7636, S256 only): GET shows a sign-in form for one fixed test user,
  submitting it redirects back to the registered redirect URI with a one-time code;
- ``/token``: exchanges a code for a JWT access token if the ``code_verifier`` matches the
  challenge, the client and the redirect URI, with CORS for the registered origins (a browser
  page posts there). Every exchange is recorded in :attr:`IdentityProvider.exchanges`.

:meth:`IdentityProvider.token` signs a token directly, for tests that need no browser.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.federated.servers import ThreadedServer

#: The issuer of :meth:`IdentityProvider.token`'s tokens by default (the style of Keycloak).
ISSUER = "https://idp.example.org/realms/fedgate"
AUDIENCE = "fedgate-site-a"
KEY_ID = "site-key-1"


@dataclass
class TestUser:
    """The one person who signs in at ``/authorize`` (a submitted form is the sign-in)."""

    sub: str = "c0ffee-test-user"
    roles: list[str] = field(default_factory=lambda: ["query"])


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    sub: str
    expires: float


def s256(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (without python-multipart)."""
    return dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    """RFC 6749 5.2: an error response of the token endpoint."""
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


class IdentityProvider:
    """A real HTTP server publishing a JWKS and, for registered public clients, the
    authorization code flow with PKCE; the private key signs the tokens.

    ``issuer`` None means the server's own URL (what a discovery document must name).
    Register a client with :meth:`register` before a browser signs in.
    """

    def __init__(
        self,
        issuer: str | None = ISSUER,
        audience: str = AUDIENCE,
        roles_claim: str = "realm_access.roles",
    ) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=KEY_ID, use="sig", alg="RS256")
        self._jwk = jwk
        self.audience = audience
        self.roles_claim = roles_claim
        self.user = TestUser()
        #: client_id -> its registered redirect URIs (exact match, RFC 6749 3.1.2.3).
        self.clients: dict[str, set[str]] = {}
        self._grants: dict[str, _Grant] = {}
        #: Every token request: (code, client_id, whether a token was issued).
        self.exchanges: list[tuple[str, str, bool]] = []
        self.server = ThreadedServer(self._app())
        self._issuer = issuer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def issuer(self) -> str:
        return self._issuer or self.server.url

    @property
    def jwks_url(self) -> str:
        return f"{self.server.url}/certs"

    def register(self, client_id: str, redirect_uri: str) -> None:
        """A public client (no secret) with one more redirect URI."""
        self.clients.setdefault(client_id, set()).add(redirect_uri)

    def start(self) -> IdentityProvider:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def token(self, key: Any = None, kid: str = KEY_ID, **claims: Any) -> str:
        """A signed access token: ``claims`` over a query user's defaults."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "hub-analyst",
            "iat": now,
            "exp": now + 300,
            **self._roles(["query"]),
            **claims,
        }
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid})

    def _roles(self, roles: list[str]) -> dict[str, Any]:
        claim: Any = roles
        for part in reversed(self.roles_claim.split(".")):
            claim = {part: claim}
        result: dict[str, Any] = claim
        return result

    def _allowed_origins(self) -> set[str]:
        return {
            f"{urlsplit(uri).scheme}://{urlsplit(uri).netloc}"
            for uris in self.clients.values()
            for uri in uris
        }

    def _app(self) -> Starlette:
        async def jwks(request: Request) -> Response:
            return JSONResponse({"keys": [self._jwk]})

        async def discovery(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{self.url}/authorize",
                    "token_endpoint": f"{self.url}/token",
                    "jwks_uri": self.jwks_url,
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code"],
                    "code_challenge_methods_supported": ["S256"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": ["none"],
                }
            )

        async def authorize(request: Request) -> Response:
            params = (
                await _form(request) if request.method == "POST" else dict(request.query_params)
            )
            client_id = params.get("client_id", "")
            redirect_uri = params.get("redirect_uri", "")
            # RFC 6749 4.1.2.1: an unknown client or redirect URI is never redirected to.
            if redirect_uri not in self.clients.get(client_id, set()):
                return HTMLResponse("<p>Unknown client or redirect URI.</p>", status_code=400)
            state = params.get("state", "")

            def back(**answer: str) -> Response:
                query = urlencode({**answer, "state": state})
                return RedirectResponse(f"{redirect_uri}?{query}", status_code=303)

            if params.get("response_type") != "code":
                return back(error="unsupported_response_type")
            if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
                return back(error="invalid_request", error_description="PKCE S256 is required")
            if request.method == "GET":
                hidden = "".join(
                    f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                    for k, v in params.items()
                )
                return HTMLResponse(
                    '<!doctype html><html lang="en"><head><title>Test provider</title></head>'
                    f'<body><main><h1>Test provider</h1><form method="post">{hidden}'
                    f"<p>Sign in as {html.escape(self.user.sub)}.</p>"
                    '<button type="submit">Sign in</button></form></main></body></html>'
                )
            code = secrets.token_urlsafe(24)
            self._grants[code] = _Grant(
                client_id, redirect_uri, params["code_challenge"], self.user.sub, time.time() + 60
            )
            return back(code=code)

        async def token(request: Request) -> Response:
            form = await _form(request)
            code = str(form.get("code", ""))
            client_id = str(form.get("client_id", ""))
            grant = self._grants.pop(code, None)  # one-time (RFC 6749 4.1.2)
            if form.get("grant_type") != "authorization_code":
                answer = _oauth_error("unsupported_grant_type", "authorization_code only")
            elif grant is None or grant.expires < time.time():
                answer = _oauth_error("invalid_grant", "unknown, used or expired code")
            elif grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
                answer = _oauth_error("invalid_grant", "another client or redirect URI")
            elif s256(str(form.get("code_verifier", ""))) != grant.challenge:
                answer = _oauth_error("invalid_grant", "the code_verifier does not match")
            else:
                access = self.token(sub=grant.sub, azp=client_id, **self._roles(self.user.roles))
                answer = JSONResponse(
                    {"access_token": access, "token_type": "Bearer", "expires_in": 300},
                    headers={"Cache-Control": "no-store"},
                )
            self.exchanges.append((code, client_id, answer.status_code == 200))
            return answer

        async def cors(request: Request, call_next: Any) -> Response:
            origin = request.headers.get("origin")
            allowed = origin in self._allowed_origins()
            if request.method == "OPTIONS":
                response: Response = Response(status_code=204 if allowed else 403)
            else:
                response = await call_next(request)
            if allowed and request.url.path == "/token":
                response.headers["Access-Control-Allow-Origin"] = str(origin)
                response.headers["Access-Control-Allow-Methods"] = "POST"
                response.headers["Access-Control-Allow-Headers"] = "Content-Type, Accept"
                response.headers["Vary"] = "Origin"
            return response

        return Starlette(
            middleware=[Middleware(BaseHTTPMiddleware, dispatch=cors)],
            routes=[
                Route("/certs", jwks),
                Route("/.well-known/openid-configuration", discovery),
                Route("/authorize", authorize, methods=["GET", "POST"]),
                Route("/token", token, methods=["POST", "OPTIONS"]),
            ],
        )
