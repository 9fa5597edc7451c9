"""One budget per person: tokens name their owner, a hub asserts the analyst it asks for.

Real processes over real sockets: sites are uvicorn servers over a real findings index, the hub
is ``fedgate hub`` with a key pair from ``fedgate hub keygen``, the identity provider a real
JWKS server. The site's audit log shows whom it charged (``person``) and which credential
asked (``client``); its ``/budget`` shows that the person's budget is one.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.auth import AuthClient, Authenticator, AuthSettings, Denied, Principal, TrustedHub
from gateway.federated.audit import AUDIT_FILE_NAME, read_audit_log
from gateway.hub_assertion import load_private_key, sign_assertion, verify_assertion
from tests.federated.conftest import ADMIN_TOKEN, Site, SiteFactory, sha256, site_auth
from tests.federated.test_auth import site_auth_with_oidc
from tests.federated.test_hub import HUB_TOKEN, hub_process
from tests.federated.test_openapi import _relative
from tests.support.gateway import GatewayProcess
from tests.support.identity_provider import IdentityProvider
from tests.support.openapi import assert_documented, load_spec
from tests.support.process import run_fedgate

ALICE_LAPTOP = "alice-laptop-token"
ALICE_NOTEBOOK = "alice-notebook-token"
BOB = "bob-token"
HUB_CREDENTIAL = "hub-eu-site-token"
HUB_NAME = "hub-eu"
SITE_NAME = "site-a"  # the site's name at the hub: the audience of the hub's assertions
ON_BEHALF_OF = "Fedgate-On-Behalf-Of"
SPEC = load_spec("federated.yaml")


class HubKeys:
    """The hub's key pair as ``fedgate hub keygen`` writes it."""

    def __init__(self, directory: Path) -> None:
        result = run_fedgate("hub", "keygen", "--out", str(directory), "--name", HUB_NAME)
        assert result.returncode == 0, result.stderr
        self.private_path = directory / "hub-signing-key.pem"
        self.public_pem = (directory / "hub-signing-key.pub").read_text()
        # What keygen prints is what a site operator pastes into auth.hubs.
        assert self.public_pem.strip().splitlines()[1] in result.stdout
        self.key = load_private_key(self.private_path.read_bytes())

    def assertion(self, person: str = "alice", **overrides: Any) -> str:
        options: dict[str, Any] = {
            "hub": HUB_NAME,
            "person": person,
            "audience": SITE_NAME,
            "roles": ["query"],
        }
        options.update(overrides)
        return sign_assertion(self.key, **options)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> HubKeys:
    return HubKeys(tmp_path_factory.mktemp("hub-keys"))


def persons_auth(keys: HubKeys, hub_roles: tuple[str, ...] = ("hub", "query")) -> AuthSettings:
    """Alice with two tokens, Bob with one, the hub's credential, and the hub's public key."""
    query: list[Any] = ["query"]
    clients = [
        AuthClient(
            name="alice-laptop", person="alice", token_sha256=sha256(ALICE_LAPTOP), roles=query
        ),
        AuthClient(
            name="alice-notebook", person="alice", token_sha256=sha256(ALICE_NOTEBOOK), roles=query
        ),
        AuthClient(name="bob", token_sha256=sha256(BOB), roles=query),
        AuthClient(name="hub-eu", token_sha256=sha256(HUB_CREDENTIAL), roles=list(hub_roles)),
        AuthClient(name="operator", token_sha256=sha256(ADMIN_TOKEN), roles=["admin"]),
    ]
    hub = TrustedHub(name=HUB_NAME, public_key=keys.public_pem, audience=SITE_NAME)
    return AuthSettings(clients=clients, hubs=[hub])


def audit_entries(site: Site) -> list[dict[str, Any]]:
    return list(read_audit_log(Path(site.index.data_dir) / AUDIT_FILE_NAME))


def spent(site: Site, token: str) -> float:
    response = httpx.get(
        f"{site.url}/budget", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    value: float = response.json()["epsilon_spent"]
    return value


def relayed(site: Site, assertion: str | None, token: str = HUB_CREDENTIAL) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if assertion is not None:
        headers[ON_BEHALF_OF] = assertion
    return httpx.get(f"{site.url}/count", params={"PatientSex": "F"}, headers=headers, timeout=30)


def test_two_tokens_of_one_person_are_one_person_with_one_budget(
    make_site: SiteFactory, keys: HubKeys
) -> None:
    site = make_site(auth=persons_auth(keys), dp={"enabled": True})
    assert site.get({"PatientSex": "F"}, token=ALICE_LAPTOP).status_code == 200
    after_laptop = spent(site, ALICE_LAPTOP)
    assert after_laptop > 0
    assert spent(site, ALICE_NOTEBOOK) == after_laptop
    assert site.get({"PatientSex": "M"}, token=ALICE_NOTEBOOK).status_code == 200
    # What Alice spends with either token is gone from both; Bob's budget is his own.
    assert spent(site, ALICE_LAPTOP) == spent(site, ALICE_NOTEBOOK) > after_laptop
    assert spent(site, BOB) == 0
    answered = [(e["client"], e["person"]) for e in audit_entries(site)]
    assert answered == [("alice-laptop", "alice"), ("alice-notebook", "alice")]


def test_an_oidc_caller_is_the_person_oidc_sub(make_site: SiteFactory, tmp_path: Path) -> None:
    idp = IdentityProvider()
    idp.server.start()
    try:
        site = make_site(auth=site_auth_with_oidc(idp))
        token = idp.token(sub="f3a9-alice")
        assert site.get({"PatientSex": "F"}, token=token).status_code == 200
    finally:
        idp.server.stop()
    [entry] = audit_entries(site)
    assert entry["person"] == entry["client"] == "oidc:f3a9-alice"


def test_the_hub_asserts_the_analyst_and_the_site_charges_that_person(
    make_site: SiteFactory, keys: HubKeys, tmp_path: Path
) -> None:
    site = make_site(auth=persons_auth(keys), dp={"enabled": True})
    analyst_token = "alice-at-the-hub"
    hub_audit = tmp_path / "hub-audit.jsonl"
    hub_config = {
        "audit_log": str(hub_audit),
        "name": HUB_NAME,
        "signing_key_file": str(keys.private_path),
        "auth": {
            "clients": [
                {
                    "name": "alice-hub-login",
                    "person": "alice",
                    "token_sha256": sha256(analyst_token),
                    "roles": ["query"],
                }
            ]
        },
    }
    sites = [{"name": SITE_NAME, "url": site.url, "token": HUB_CREDENTIAL}]
    with hub_process(tmp_path, sites, **hub_config) as hub:
        response = httpx.get(
            f"{hub}/count",
            params={"PatientSex": "F"},
            headers={"Authorization": f"Bearer {analyst_token}"},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    assert [s["status"] for s in response.json()["sites"]] == ["ok"]
    [entry] = audit_entries(site)
    assert entry["status"] == "answered"
    assert entry["person"] == "alice"
    assert entry["client"] == "hub-eu/alice"
    [relayed_entry] = read_audit_log(hub_audit)
    assert (relayed_entry["client"], relayed_entry["person"]) == ("alice-hub-login", "alice")
    # Through the hub and directly: one person, one budget.
    through_hub = spent(site, ALICE_LAPTOP)
    assert through_hub > 0
    assert site.get({"PatientSex": "M"}, token=ALICE_NOTEBOOK).status_code == 200
    assert spent(site, ALICE_LAPTOP) > through_hub


def test_a_hub_without_a_signing_key_is_refused_by_a_site_that_expects_one(
    make_site: SiteFactory, keys: HubKeys, tmp_path: Path
) -> None:
    site = make_site(auth=persons_auth(keys))
    sites = [{"name": SITE_NAME, "url": site.url, "token": HUB_CREDENTIAL}]
    with hub_process(tmp_path, sites, name=HUB_NAME) as hub:
        response = httpx.get(
            f"{hub}/count", headers={"Authorization": f"Bearer {HUB_TOKEN}"}, timeout=60
        )
    [answer] = response.json()["sites"]
    assert answer["status"] == "error"
    assert "401" in answer["error"] and ON_BEHALF_OF in answer["error"]
    assert audit_entries(site) == []  # the hub was never taken for a person


def _forged(keys: HubKeys) -> dict[str, str | None]:
    now = time.time()
    valid = keys.assertion()
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "bob"
    tampered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return {
        "no assertion": None,
        "signed by another key": sign_assertion(
            ed25519.Ed25519PrivateKey.generate(), HUB_NAME, "alice", SITE_NAME, ["query"]
        ),
        "expired": keys.assertion(now=now - 600),
        "wrong audience": keys.assertion(audience="site-b"),
        "unknown hub": keys.assertion(hub="hub-elsewhere"),
        "too long-lived": keys.assertion(seconds=86_400),
        "tampered subject": f"{header}.{tampered}.{signature}",
        "alg none": jwt.encode(
            {
                "iss": HUB_NAME,
                "sub": "alice",
                "aud": SITE_NAME,
                "iat": int(now),
                "exp": int(now) + 60,
                "jti": "x",
                "roles": ["query"],
            },
            None,
            algorithm="none",
        ),
        "not a JWT": "alice",
    }


def test_forged_expired_and_misaddressed_assertions_are_refused(
    make_site: SiteFactory, keys: HubKeys
) -> None:
    site = make_site(auth=persons_auth(keys))
    assert relayed(site, keys.assertion()).status_code == 200
    for case, assertion in _forged(keys).items():
        response = relayed(site, assertion)
        assert response.status_code == 401, (case, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), case
        assert ON_BEHALF_OF in response.json()["error"], case
        assert_documented(SPEC, _relative(response))
    # Only the valid one was answered, and it was charged to Alice.
    assert [e["person"] for e in audit_entries(site)] == ["alice"]


def test_an_assertion_answers_one_request(make_site: SiteFactory, keys: HubKeys) -> None:
    """Whoever also holds the hub's credential cannot send a seen assertion again, with
    another question, as that analyst (RFC 7519's jti, 4.1.7)."""
    site = make_site(auth=persons_auth(keys))
    assertion = keys.assertion(person="alice", roles=["query"])
    assert relayed(site, assertion).status_code == 200
    replayed = relayed(site, assertion)
    assert replayed.status_code == 401
    assert "already used" in replayed.json()["error"]
    assert replayed.headers["www-authenticate"].startswith("Bearer")
    assert_documented(SPEC, _relative(replayed))
    # The hub signs a new one for each request: those are answered.
    assert relayed(site, keys.assertion(person="alice")).status_code == 200
    assert [e["person"] for e in audit_entries(site)] == ["alice", "alice"]


def test_one_request_may_verify_its_assertion_twice_another_may_not(keys: HubKeys) -> None:
    """The gateway's middleware and its endpoint each identify a request: one request."""
    authenticator = Authenticator(persons_auth(keys))
    bearer, assertion = f"Bearer {HUB_CREDENTIAL}", keys.assertion(person="dora")
    request: dict[str, Any] = {}
    for _ in range(2):
        principal = authenticator.identify(bearer, assertion, request)
        assert isinstance(principal, Principal) and principal.person == "dora"
    refused = authenticator.identify(bearer, assertion, {})
    assert isinstance(refused, Denied) and refused.status == 401
    assert isinstance(authenticator.identify(bearer, assertion), Denied)  # no request: strict


def test_only_a_hub_credential_may_speak_for_a_person(
    make_site: SiteFactory, keys: HubKeys
) -> None:
    site = make_site(auth=persons_auth(keys))
    response = relayed(site, keys.assertion(person="bob"), token=ALICE_LAPTOP)
    assert response.status_code == 403
    assert "'hub' role" in response.json()["error"]
    assert_documented(SPEC, _relative(response))
    # An administrator may do everything except be a hub: a hub's requests are always for
    # someone else, an administrator's for themselves.
    assert relayed(site, keys.assertion(person="bob"), token=ADMIN_TOKEN).status_code == 403
    assert audit_entries(site) == []


def test_relayed_roles_are_what_the_hub_granted_and_the_site_allows(
    make_site: SiteFactory, keys: HubKeys
) -> None:
    # The hub granted the analyst no federated role: refused, whatever the hub's credential.
    site = make_site(auth=persons_auth(keys))
    assert relayed(site, keys.assertion(roles=[])).status_code == 403
    assert relayed(site, keys.assertion(roles=["admin", "hub"])).status_code == 403
    # The site gave the hub's credential only the hub role: the hub cannot grant more.
    capped = make_site(auth=persons_auth(keys, hub_roles=("hub",)), name="capped")
    assert relayed(capped, keys.assertion(roles=["query", "exact"])).status_code == 403


@pytest.fixture
def gateway_with_hub(tmp_path: Path, keys: HubKeys) -> Iterator[GatewayProcess]:
    """The real gateway process, configured from YAML with a trusted hub and a hub credential."""
    auth = site_auth().model_dump(mode="json")
    auth["clients"].append(
        {"name": "hub-eu", "token_sha256": sha256(HUB_CREDENTIAL), "roles": ["hub", "query"]}
    )
    auth["hubs"] = [{"name": HUB_NAME, "public_key": keys.public_pem, "audience": SITE_NAME}]
    gateway = GatewayProcess(tmp_path / "gateway", {"auth": auth}).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def test_the_gateway_process_takes_the_person_from_the_hub_assertion(
    gateway_with_hub: GatewayProcess, keys: HubKeys
) -> None:
    url = gateway_with_hub.url + "/federated/v1/count"
    hub = {"Authorization": f"Bearer {HUB_CREDENTIAL}"}
    bare = httpx.get(url, headers=hub, timeout=30)
    assert bare.status_code == 401
    assert ON_BEHALF_OF in bare.text
    expired = httpx.get(
        url, headers={**hub, ON_BEHALF_OF: keys.assertion(now=time.time() - 600)}, timeout=30
    )
    assert expired.status_code == 401
    assert "expired" in expired.text
    carol = {**hub, ON_BEHALF_OF: keys.assertion("carol")}
    answered = httpx.get(url, headers=carol, timeout=30)
    assert answered.status_code == 200, answered.text
    # Its middleware and its endpoint both verified it; sent again, it is refused.
    replayed = httpx.get(url, headers=carol, params={"PatientSex": "M"}, timeout=30)
    assert replayed.status_code == 401, replayed.text
    assert "already used" in replayed.json()["error"]
    audit = gateway_with_hub.data_dir / AUDIT_FILE_NAME
    assert [(e["client"], e["person"]) for e in read_audit_log(audit)] == [
        ("hub-eu/carol", "carol")
    ]


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_replaces_it(
    tmp_path: Path,
) -> None:
    keys = HubKeys(tmp_path / "keys")
    assert keys.private_path.stat().st_mode & 0o777 == 0o600
    before = keys.private_path.read_bytes()
    again = run_fedgate("hub", "keygen", "--out", str(tmp_path / "keys"))
    assert again.returncode == 2
    assert "exists" in again.stderr
    assert keys.private_path.read_bytes() == before
    # The public key printed verifies what the private key signs.
    hub = TrustedHub(name=HUB_NAME, public_key=keys.public_pem, audience=SITE_NAME)
    assert isinstance(keys.key, ed25519.Ed25519PrivateKey)
    claims = verify_assertion(keys.assertion("dana"), {HUB_NAME: (hub.key, SITE_NAME)})
    assert (claims["iss"], claims["sub"], claims["aud"]) == (HUB_NAME, "dana", SITE_NAME)
    assert claims["exp"] - claims["iat"] == 60


def test_the_hub_refuses_to_start_with_an_unusable_signing_key(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    config = tmp_path / "hub.yaml"
    config.write_text(
        json.dumps(
            {
                "name": HUB_NAME,
                "signing_key_file": str(bad),
                "sites": [{"name": SITE_NAME, "url": "http://127.0.0.1:9/federated/v1"}],
            }
        )
    )
    result = run_fedgate("hub", "--config", str(config), timeout=60)
    assert result.returncode == 2
    assert "signing_key_file" in result.stderr and "not a usable PEM key" in result.stderr


def test_a_site_refuses_a_hub_entry_without_a_usable_public_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of public_key and public_key_file"):
        TrustedHub(name=HUB_NAME, audience=SITE_NAME)
    with pytest.raises(ValueError, match="not a usable public key"):
        TrustedHub(name=HUB_NAME, audience=SITE_NAME, public_key="hello")
    with pytest.raises(ValueError, match="cannot read"):
        TrustedHub(name=HUB_NAME, audience=SITE_NAME, public_key_file=tmp_path / "missing.pub")
