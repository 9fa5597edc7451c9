"""deploy/ohif/serve.py, the compose stack's OHIF server: the prebuilt viewer, its app-config
pointed at the same-origin /dicomweb, proxied to a real gateway (auth on) with a viewer token the
browser never sees; OHIF in headless Chromium lists the study's series with its thumbnail."""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from tests.deploy.conftest import DEPLOY
from tests.sr_writer.npm import OHIF_DIST, ensure_node_packages
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port, wait_for_http
from tests.support.process import spawn, terminate
from tests.support.requirements import require_executable
from tests.viewer.test_ohif import CHROMIUM_ARGS, wait_for_series_list

pytestmark = [pytest.mark.slow]


@dataclass
class Site:
    viewer_url: str
    gateway: GatewayProcess
    study: Phantom


def client(name: str, token: str, role: str) -> dict[str, object]:
    return {
        "name": name,
        "roles": [role],
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
    }


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    ensure_node_packages()
    viewer_token, admin_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    clients = [client("ohif", viewer_token, "viewer"), client("admin", admin_token, "admin")]
    gateway = GatewayProcess(tmp_path / "gateway", {"auth": {"clients": clients}}).start()
    study = generate_phantom(PhantomSpec(seed=78, slices=3, rows=64, columns=64))
    DICOMwebClient(
        gateway.dicomweb_url, headers={"Authorization": f"Bearer {admin_token}"}
    ).store_instances(list(study.instances()))
    token_file = tmp_path / "viewer-token"
    token_file.write_text(viewer_token + "\n")
    port = free_port()
    process = spawn(
        [
            sys.executable,
            str(DEPLOY / "ohif" / "serve.py"),
            "--root",
            str(OHIF_DIST),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--upstream",
            gateway.dicomweb_url,
            "--token-file",
            str(token_file),
        ],
        tmp_path / "ohif.log",
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=30, process=process)
        yield Site(f"http://127.0.0.1:{port}", gateway, study)
    finally:
        terminate(process)
        gateway.stop()


def test_serves_the_viewer_and_proxies_dicomweb_with_the_viewer_token(site: Site) -> None:
    uid = site.study.truth.study_instance_uid
    with httpx.Client(base_url=site.viewer_url, timeout=30) as browser:
        page = browser.get(f"/viewer?StudyInstanceUIDs={uid}")  # a client-side route
        assert page.status_code == 200 and "<html" in page.text.lower()
        config = browser.get("/app-config.js").text
        for root in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
            assert f"{root}: '/dicomweb'" in config
        assert "staticWado: false" in config
        studies = browser.get("/dicomweb/studies", headers={"Accept": "application/dicom+json"})
        assert studies.status_code == 200, studies.text
        assert [study["0020000D"]["Value"][0] for study in studies.json()] == [uid]
        # Outside dist/: the viewer's page, not the file.
        escape = browser.get("/..%2f..%2f..%2fetc/passwd")
        assert "root:" not in escape.text
    # Without the proxy the gateway asks for a token: the proxy added the viewer's.
    assert httpx.get(f"{site.gateway.dicomweb_url}/studies", timeout=30).status_code == 401


def test_ohif_lists_the_series_with_its_thumbnail(site: Site, tmp_path: Path) -> None:
    chromium = require_executable("chromium", "/usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    uid = site.study.truth.study_instance_uid
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{site.viewer_url}/viewer?StudyInstanceUIDs={uid}", timeout=60_000)
            image = page.locator("[data-cy='study-browser-thumbnail'] img").first
            wait_for_series_list(page, image)
            page.wait_for_function(
                "e => e.complete && e.naturalWidth > 0", arg=image.element_handle(), timeout=30_000
            )
            page.screenshot(path=str(tmp_path / "ohif-serve.png"))
        finally:
            browser.close()
