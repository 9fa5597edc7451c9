"""Sign-in with OpenID Connect (authorization code with PKCE) in headless Chromium, against a
real authorization server (tests/support/identity_provider.py) and a real site."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from gateway.auth import AuthSettings, OidcSettings
from gateway.federated.audit import AUDIT_FILE_NAME, read_audit_log
from tests.federated.conftest import sha256, site_auth
from tests.federated.test_hub import HUB_TOKEN, Sites, hub_process, site_patients
from tests.support.identity_provider import IdentityProvider, s256
from tests.support.ports import free_port
from tests.ui.conftest import Recorded, UiSite, attrition, axe_violations, new_page, parse_count

CLIENT_ID = "fedgate-dashboard"
PROVIDER = "Test provider"
TOKEN_KEY = "fedgate.token"


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    # issuer None: the provider's own URL, as its discovery document says.
    provider = IdentityProvider(issuer=None).start()
    yield provider
    provider.stop()


def oidc_auth(idp: IdentityProvider) -> AuthSettings:
    oidc = OidcSettings(
        jwks_url=idp.jwks_url,
        issuer=idp.issuer,
        audience=idp.audience,
        roles_claim="realm_access.roles",
        dashboard_client_id=CLIENT_ID,
        display_name=PROVIDER,
    )
    return site_auth().model_copy(update={"oidc": oidc})


@pytest.fixture
def oidc_site(make_ui_site: Callable[..., UiSite], idp: IdentityProvider) -> UiSite:
    site = make_ui_site(auth=oidc_auth(idp))
    idp.register(CLIENT_ID, f"{site.url}/ui/")
    return site


def stored(page: Any) -> dict[str, Any]:
    """The tab's sessionStorage and localStorage, as the user's devtools show them."""
    result: dict[str, Any] = page.evaluate(
        "() => ({session: {...sessionStorage}, local: {...localStorage}})"
    )
    return result


def test_sign_in_with_the_provider_lands_on_the_builder_and_counts_as_oidc_sub(
    oidc_site: UiSite, idp: IdentityProvider, browser: Any
) -> None:
    recorded = Recorded()
    page = new_page(browser, recorded)
    addresses: list[str] = []
    page.on("framenavigated", lambda frame: addresses.append(frame.url))
    page.goto(f"{oidc_site.url}/ui/")
    page.get_by_role("button", name=f"Sign in with {PROVIDER}").click()
    # At the provider: its own sign-in page, then back with a code.
    page.wait_for_url(f"{idp.url}/authorize?*")
    query = parse_qs(urlsplit(page.url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [f"{oidc_site.url}/ui/"]
    page.get_by_role("button", name="Sign in").click()
    page.locator("#attrition[data-state='done']").wait_for(timeout=30_000)

    # Signed in on the builder, the code gone from the address bar, a count shown.
    assert page.url == f"{oidc_site.url}/ui/"
    [everyone] = attrition(page)[:1]
    total, _ = parse_count(everyone["Patients"])
    assert total > 0
    # The API saw the person as oidc:<sub> (the site's audit log), with the provider's token.
    entries = list(read_audit_log(Path(oidc_site.index.data_dir) / AUDIT_FILE_NAME))
    assert entries and {e["client"] for e in entries} == {f"oidc:{idp.user.sub}"}
    token = stored(page)["session"][TOKEN_KEY]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == idp.user.sub and claims["iss"] == idp.issuer
    assert [ok for _, client, ok in idp.exchanges] == [True]

    # The token is in no address, no request's URL or body, and not in localStorage.
    assert any("code=" in address for address in addresses)  # the flow really went by code
    assert not [a for a in addresses if token in a]
    assert not [r for r in recorded.requests if token in r]
    assert token not in json.dumps(stored(page)["local"])
    assert "fedgate.oidc.pending" not in stored(page)["session"]


def test_an_answer_with_another_state_is_refused(
    oidc_site: UiSite, idp: IdentityProvider, browser: Any
) -> None:
    page = new_page(browser)
    page.goto(f"{oidc_site.url}/ui/")
    page.get_by_role("button", name=f"Sign in with {PROVIDER}").click()
    page.wait_for_url(f"{idp.url}/authorize?*")
    # An attacker's own code (its own state and verifier), sent to the user as a link.
    forged = httpx.post(
        f"{idp.url}/authorize",
        data={
            "client_id": CLIENT_ID,
            "redirect_uri": f"{oidc_site.url}/ui/",
            "response_type": "code",
            "scope": "openid",
            "state": "attackers-state",
            "code_challenge": s256("attackers-verifier-" + "x" * 30),
            "code_challenge_method": "S256",
        },
        timeout=10,
    )
    assert forged.status_code == 303
    page.goto(forged.headers["location"])
    error = page.locator("#login-error")
    error.wait_for()
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert "state does not match" in error.text_content()
    assert page.get_by_role("button", name=f"Sign in with {PROVIDER}").is_visible()
    # Not signed in, the code never exchanged, and gone from the address bar.
    assert TOKEN_KEY not in stored(page)["session"]
    assert idp.exchanges == []
    assert "code=" not in page.url


def test_axe_finds_no_serious_violation_on_the_login_page_with_a_provider(
    oidc_site: UiSite, browser: Any
) -> None:
    page = new_page(browser, bypass_csp=True)
    page.goto(f"{oidc_site.url}/ui/")
    page.get_by_role("button", name=f"Sign in with {PROVIDER}").wait_for()
    assert page.get_by_label("Access token").is_visible()  # the token form is still there
    assert axe_violations(page) == []


def test_a_provider_whose_metadata_names_another_issuer_is_not_offered(
    make_ui_site: Callable[..., UiSite], idp: IdentityProvider, browser: Any
) -> None:
    auth = oidc_auth(idp)
    assert auth.oidc is not None
    discovery_url = f"{idp.url}/.well-known/openid-configuration"
    wrong = auth.oidc.model_copy(
        update={"issuer": "https://elsewhere.example.org", "discovery_url": discovery_url}
    )
    site = make_ui_site(auth=auth.model_copy(update={"oidc": wrong}))
    config = httpx.get(f"{site.url}/ui/config.json", timeout=10).json()
    assert "not the configured" in config["oidc_login"]["error"]
    page = new_page(browser)
    page.goto(f"{site.url}/ui/")
    page.get_by_text("is not available").wait_for()
    assert page.get_by_role("button", name=f"Sign in with {PROVIDER}").count() == 0
    assert page.get_by_label("Access token").is_visible()


def test_sign_in_with_the_provider_at_a_hub(
    tmp_path: Path, idp: IdentityProvider, browser: Any
) -> None:
    sites = Sites(tmp_path)
    try:
        hub_port = free_port()
        idp.register(CLIENT_ID, f"http://127.0.0.1:{hub_port}/ui/")
        oidc = oidc_auth(idp).oidc
        assert oidc is not None
        auth = {
            "clients": [{"name": "analyst", "token_sha256": sha256(HUB_TOKEN), "roles": ["query"]}],
            "oidc": oidc.model_dump(mode="json", exclude_none=True),
        }
        configs = [sites.site("north", site_patients("n", 30, 20, 15))]
        with hub_process(tmp_path, configs, auth=auth, port=hub_port) as hub_api:
            hub = hub_api.removesuffix("/federated/v1")
            page = new_page(browser)
            page.goto(f"{hub}/ui/")
            page.get_by_role("button", name=f"Sign in with {PROVIDER}").click()
            page.wait_for_url(f"{idp.url}/authorize?*")
            page.get_by_role("button", name="Sign in").click()
            page.locator("#attrition[data-state='done']").wait_for(timeout=30_000)
            assert page.url == f"{hub}/ui/"
            [everyone] = attrition(page)[:1]
            assert parse_count(everyone["north"])[0] == 50
            assert parse_count(everyone["All sites"])[0] == 50
    finally:
        sites.close()
