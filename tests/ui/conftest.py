"""The dashboard in headless Chromium (Playwright) against real site servers and hubs.

A site here is the federated API and the dashboard's routes served by uvicorn over a real
findings index (tests/federated/servers.py); the hub is the real ``fedgate hub`` process. Every
request the browser makes is recorded, so that tests can scan it for identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dashboard import dashboard_routes, missing_vendor_files
from gateway.auth import AuthSettings
from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex, IndexSettings
from tests.federated.conftest import site_auth, standard_cohort
from tests.federated.servers import ThreadedServer, site_app
from tests.federated.synthetic import SyntheticPatient, write_patients
from tests.support.requirements import missing, require_executable
from tests.viewer.test_ohif import CHROMIUM_ARGS

REPO_ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
SETUP_HOOK = REPO_ROOT / "scripts" / "setup.d" / "40-dashboard.sh"


def ensure_dashboard_assets() -> None:
    """The chart library and axe-core, installed by the setup hook when missing (fails under
    CI=true when they cannot be: CI's setup must have put them there)."""
    if not missing_vendor_files() and AXE.is_file():
        return
    require_executable("npm")
    import subprocess

    result = subprocess.run(["bash", str(SETUP_HOOK)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or missing_vendor_files() or not AXE.is_file():
        missing(f"the dashboard's npm assets are missing: {result.stdout}{result.stderr}")


@dataclass
class UiSite:
    index: FindingsIndex
    server: ThreadedServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def api(self) -> str:
        return f"{self.server.url}/federated/v1"


def ui_site_app(
    index: FindingsIndex, settings: FederatedSettings, auth: AuthSettings | None = None
) -> Any:
    """A site with the dashboard; with ``auth.oidc``, its sign-in as the gateway wires it."""
    auth = auth or site_auth()
    oidc_login = auth.oidc.dashboard_login() if auth.oidc else None
    routes = dashboard_routes("site", auth_enabled=True, oidc_login=oidc_login)
    return site_app(index, settings, auth, extra=routes)


@pytest.fixture
def make_ui_site(tmp_path: Path) -> Iterator[Callable[..., UiSite]]:
    started: list[UiSite] = []

    def make(
        patients: list[SyntheticPatient] | None = None,
        name: str = "site",
        auth: AuthSettings | None = None,
        **settings: Any,
    ) -> UiSite:
        index = FindingsIndex.open(IndexSettings(), tmp_path / name)
        write_patients(index, standard_cohort() if patients is None else patients)
        federated = FederatedSettings.model_validate(settings)
        site = UiSite(index, ThreadedServer(ui_site_app(index, federated, auth)).start())
        started.append(site)
        return site

    yield make
    for site in started:
        site.server.stop()
        site.index.close()


@dataclass
class Recorded:
    """What the browser sent: every URL and request body, and every page's text."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium = require_executable("chromium", "/usr/bin/chromium")
    ensure_dashboard_assets()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extras install it
        missing("playwright (Python) is not installed")
        raise
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser: Any, recorded: Recorded | None = None, bypass_csp: bool = False) -> Any:
    """A page in a fresh context (own sessionStorage/localStorage), recording its requests.
    ``bypass_csp`` lets a test inject axe-core (the pages allow only their own scripts)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=bypass_csp)
    page = context.new_page()
    if recorded is not None:
        page.on(
            "request",
            lambda request: recorded.requests.append(
                f"{request.method} {request.url} {request.post_data or ''}"
            ),
        )
        page.on(
            "console",
            lambda message: (
                recorded.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
    return page


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(url)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#attrition[data-state='done']").wait_for(timeout=30_000)


def wait_for_counts(page: Any, generation_before: int, timeout: float = 30_000) -> int:
    """Wait until the attrition table shows the answers of a change after ``generation_before``."""
    page.wait_for_function(
        """before => {
            const table = document.getElementById('attrition');
            return table.dataset.state === 'done' && Number(table.dataset.generation) > before;
        }""",
        arg=generation_before,
        timeout=timeout,
    )
    return generation(page)


def generation(page: Any) -> int:
    value = page.locator("#attrition").get_attribute("data-generation")
    return int(value or 0)


def attrition(page: Any) -> list[dict[str, str]]:
    """The attrition table as the user reads it: one dict per row, by column header."""
    result: list[dict[str, str]] = page.evaluate(
        """() => {
            const table = document.getElementById('attrition');
            const heads = [...table.querySelectorAll('thead th')].map(th => th.textContent);
            return [...table.querySelectorAll('tbody tr')].map(tr =>
                Object.fromEntries(
                    [...tr.children].map((cell, i) => [heads[i], cell.textContent])));
        }"""
    )
    return result


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it stands."""
    page.add_script_tag(path=str(AXE))
    result: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const results = await axe.run(document);
            return results.violations
                .filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }"""
    )
    return result


COUNT = re.compile(r"^(\d+)(?: \((\d+)–(\d+)\))?$")


def parse_count(text: str) -> tuple[int, tuple[int, int] | None]:
    match = COUNT.match(text.strip())
    assert match, f"not a count: {text!r}"
    interval = (int(match.group(2)), int(match.group(3))) if match.group(2) else None
    return int(match.group(1)), interval
