"""Auth: bearer tokens and OIDC JWTs with roles; a query client cannot reach images or jobs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from gateway.auth import Authenticator, AuthSettings, OidcSettings, RequireRole
from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex, IndexSettings
from tests.federated.conftest import ADMIN_TOKEN, QUERY_TOKEN, site_auth, standard_cohort
from tests.federated.servers import serving, site_app
from tests.federated.synthetic import write_patients
from tests.support.identity_provider import IdentityProvider


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider().start()
    yield provider
    provider.stop()


def site_auth_with_oidc(idp: IdentityProvider) -> AuthSettings:
    """The site's clients, plus tokens from ``idp`` with Keycloak's roles claim."""
    oidc = OidcSettings(
        jwks_url=idp.jwks_url,
        issuer=idp.issuer,
        audience=idp.audience,
        roles_claim="realm_access.roles",
    )
    return site_auth().model_copy(update={"oidc": oidc})


async def _stand_in(request: Request) -> Response:
    return JSONResponse({"reached": request.url.path})


@pytest.fixture
def gateway_url(tmp_path: Path, idp: IdentityProvider) -> Iterator[str]:
    """Federated routes plus /dicomweb and /jobs guarded as the gateway guards them."""
    auth = site_auth_with_oidc(idp)
    authenticator = Authenticator(auth)
    index = FindingsIndex.open(IndexSettings(), tmp_path / "site")
    write_patients(index, standard_cohort())
    guarded = [
        Mount(
            "/dicomweb",
            app=RequireRole(
                Starlette(routes=[Route("/{path:path}", _stand_in)]), authenticator, "admin"
            ),
        ),
        Mount(
            "/jobs",
            app=RequireRole(
                Starlette(routes=[Route("/{path:path}", _stand_in)]), authenticator, "admin"
            ),
        ),
    ]
    with serving(site_app(index, FederatedSettings(), auth, extra=guarded)) as server:
        yield server.url
    index.close()


def _get(url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=30)


@pytest.mark.parametrize("path", ["/dicomweb/studies", "/jobs/queue"])
def test_a_query_token_cannot_reach_images_or_jobs(gateway_url: str, path: str) -> None:
    assert _get(gateway_url + path, QUERY_TOKEN).status_code == 403
    assert _get(gateway_url + path, None).status_code == 401
    assert _get(gateway_url + path, ADMIN_TOKEN).status_code == 200


def test_query_and_admin_tokens_reach_the_federated_api(gateway_url: str) -> None:
    for token in (QUERY_TOKEN, ADMIN_TOKEN):
        response = _get(f"{gateway_url}/federated/v1/count?PatientSex=F", token)
        assert response.status_code == 200
    response = _get(f"{gateway_url}/federated/v1/count", None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert _get(f"{gateway_url}/federated/v1/count", "wrong-token").status_code == 401


def test_a_valid_jwt_with_the_query_role_is_accepted(
    gateway_url: str, idp: IdentityProvider
) -> None:
    response = _get(f"{gateway_url}/federated/v1/count?PatientSex=F", idp.token())
    assert response.status_code == 200, response.text
    assert _get(f"{gateway_url}/dicomweb/studies", idp.token()).status_code == 403


def test_forged_and_expired_jwts_are_rejected(gateway_url: str, idp: IdentityProvider) -> None:
    url = f"{gateway_url}/federated/v1/count?PatientSex=F"
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "signed by another key": idp.token(key=forger),
        "expired": idp.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "wrong audience": idp.token(aud="another-site"),
        "wrong issuer": idp.token(iss="https://evil.example.org"),
        "unknown key id": idp.token(kid="not-published"),
        "no signature (alg none)": jwt.encode(
            {
                "iss": idp.issuer,
                "aud": idp.audience,
                "sub": "x",
                "exp": int(time.time()) + 300,
                "realm_access": {"roles": ["admin"]},
            },
            None,
            algorithm="none",
        ),
        "tampered payload": _tamper(idp.token()),
    }
    for case, token in cases.items():
        assert _get(url, token).status_code == 401, case


def test_a_jwt_without_a_role_is_forbidden(gateway_url: str, idp: IdentityProvider) -> None:
    token = idp.token(realm_access={"roles": ["viewer"]})
    assert _get(f"{gateway_url}/federated/v1/count", token).status_code == 403


def _tamper(token: str) -> str:
    import base64

    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["realm_access"] = {"roles": ["admin"]}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_no_auth_configured_means_anonymous_admin() -> None:
    authenticator = Authenticator(AuthSettings())
    assert not authenticator.enabled
    principal = authenticator.authenticate(None)
    assert principal is not None and principal.has("admin")


def test_a_query_token_cannot_reach_the_real_gateways_images_or_jobs(
    tmp_path: Path,
    idp: IdentityProvider,
) -> None:
    """The real gateway process (the lead's AuthMiddleware with this Authenticator)."""
    from tests.support.gateway import GatewayProcess

    auth = site_auth_with_oidc(idp)
    gateway = GatewayProcess(tmp_path / "gateway", {"auth": auth.model_dump(mode="json")}).start()
    try:
        for path in ("/dicomweb/studies", "/jobs"):
            assert _get(gateway.url + path, QUERY_TOKEN).status_code == 403, path
            assert _get(gateway.url + path, idp.token()).status_code == 403, path
            assert _get(gateway.url + path, None).status_code == 401, path
            assert _get(gateway.url + path, ADMIN_TOKEN).status_code == 200, path
        expired = idp.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
        assert _get(gateway.url + "/dicomweb/studies", expired).status_code == 401
    finally:
        gateway.stop()
