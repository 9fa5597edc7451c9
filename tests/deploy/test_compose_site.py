"""The compose site's wiring with real Orthanc and a real gateway (no containers: Debian's
Orthanc and `fedgate gateway` as processes): compose's orthanc.json and gateway.yaml with the
secrets make-secrets.sh wrote, changed only in hosts, ports and paths. Orthanc forwards a stable
study with the forwarder token it reads from its environment, and the gateway reads the study
back from Orthanc with its password; a study the gateway refuses is not marked forwarded."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fedgate.phantom import Phantom
from tests.deploy.conftest import read_env_file
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port

REPOSITORY = Path(__file__).resolve().parents[2]


def stow_requests(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """The STOW-RS requests in the gateway's JSON log (event http.request)."""
    requests = []
    for line in gateway.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (entry.get("event"), entry.get("method"), entry.get("path")) == (
            "http.request",
            "POST",
            "/dicomweb/studies",
        ):
            requests.append(entry)
    return requests


@dataclass
class Site:
    orthanc: OrthancServer
    gateway: GatewayProcess
    #: Orthanc's login for the gateway (user fedgate), from orthanc.env.
    login: tuple[str, str]
    #: A viewer token added for the test, to read through the gateway.
    reader_token: str

    def send_and_wait_for_forwarding(self, study: Phantom, folder: Path) -> list[str]:
        """Store the study in Orthanc; return its series' FedgateForwardedInstances once the
        gateway has seen Orthanc's STOW-RS (or after 60 s)."""
        series = set()
        with httpx.Client(base_url=self.orthanc.url, timeout=30) as client:
            for instance in study.write(folder):
                stored = client.post("/instances", content=instance.read_bytes(), auth=self.login)
                assert stored.status_code == 200, stored.text
                series.add(stored.json()["ParentSeries"])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not stow_requests(self.gateway):
                time.sleep(0.5)
            time.sleep(1)  # the script records its forward after the STOW's answer
            recorded = []
            for each in sorted(series):
                answer = client.get(
                    f"/series/{each}/metadata/FedgateForwardedInstances", auth=self.login
                )
                recorded.append(answer.text if answer.status_code == 200 else "")
        return recorded


def start_site(
    compose: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, token_suffix: str = ""
) -> Site:
    """``token_suffix`` spoils the forwarder token Orthanc holds (a revoked or mistyped one)."""
    gateway_env = read_env_file(compose / "secrets" / "gateway.env")
    orthanc_env = read_env_file(compose / "secrets" / "orthanc.env")
    orthanc = OrthancServer(folder / "orthanc")
    orthanc.http_port, orthanc.dicom_port = free_port(), free_port()
    gateway = GatewayProcess(folder / "gateway")
    gateway.port = free_port()

    # The gateway: compose's gateway.yaml with the secrets of gateway.env; Orthanc at its test
    # port; SQLite instead of the PostgreSQL service; no routing (no inference service here).
    settings: dict[str, Any] = yaml.safe_load((compose / "gateway.yaml").read_text())
    settings["pacs"]["url"] = orthanc.dicomweb_url
    settings["pacs"]["auth"]["password"] = gateway_env["FEDGATE_PACS__AUTH__PASSWORD"]
    settings["routing"] = []
    settings.pop("listen")
    reader_token = secrets.token_urlsafe(16)
    settings["auth"] = {
        "clients": [
            *json.loads(gateway_env["FEDGATE_AUTH__CLIENTS"]),
            {
                "name": "test-reader",
                "roles": ["viewer"],
                "token_sha256": hashlib.sha256(reader_token.encode()).hexdigest(),
            },
        ]
    }
    gateway.settings = settings

    # Orthanc: compose's orthanc.json, with its ${VARIABLES} from orthanc.env in the environment
    # as compose's env_file gives them; the gateway's URL, ports and paths for this machine.
    shipped = json.loads((compose / "orthanc.json").read_text())
    server = shipped["DicomWeb"]["Servers"]["fedgate"]
    kept = set(shipped) - {"Name", "StorageDirectory", "IndexDirectory", "HttpPort", "DicomPort"}
    orthanc.overrides = {key: shipped[key] for key in kept - {"Plugins", "LuaScripts"}}
    orthanc.overrides["LuaScripts"] = [str(REPOSITORY / "deploy/orthanc/forward-to-fedgate.lua")]
    orthanc.overrides["DicomWeb"] = {
        **shipped["DicomWeb"],
        "Servers": {"fedgate": {**server, "Url": gateway.dicomweb_url + "/"}},
    }
    orthanc.overrides["StableAge"] = 2  # not a minute per test
    for name, value in orthanc_env.items():
        spoiled = name == "FEDGATE_FORWARDER_TOKEN"
        monkeypatch.setenv(name, value + token_suffix if spoiled else value)
    gateway.start()
    try:
        orthanc.start()
    except Exception:
        gateway.stop()
        raise
    return Site(
        orthanc, gateway, ("fedgate", orthanc_env["ORTHANC_FEDGATE_PASSWORD"]), reader_token
    )


@pytest.fixture
def site(
    deploy_with_secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    running = start_site(deploy_with_secrets / "compose", tmp_path, monkeypatch)
    try:
        yield running
    finally:
        running.orthanc.stop()
        running.gateway.stop()


def test_orthanc_forwards_with_its_token_and_the_gateway_reads_back_with_its_password(
    site: Site, small_phantom: Phantom, tmp_path: Path
) -> None:
    assert httpx.get(f"{site.orthanc.url}/system", timeout=10).status_code == 401  # auth is on
    recorded = site.send_and_wait_for_forwarding(small_phantom, tmp_path / "phantom")
    assert stow_requests(site.gateway), f"nothing forwarded; log:\n{site.gateway.log()}"
    assert {request["status"] for request in stow_requests(site.gateway)} == {200}
    assert recorded == [str(small_phantom.spec.slices)]

    # Reading goes to Orthanc with the gateway's pacs.auth password.
    studies = httpx.get(
        f"{site.gateway.dicomweb_url}/studies",
        headers={
            "Authorization": f"Bearer {site.reader_token}",
            "Accept": "application/dicom+json",
        },
        timeout=30,
    )
    assert studies.status_code == 200, studies.text
    uids = [study["0020000D"]["Value"][0] for study in studies.json()]
    assert uids == [small_phantom.truth.study_instance_uid]


def test_a_study_the_gateway_refuses_is_not_marked_forwarded(
    deploy_with_secrets: Path,
    small_phantom: Phantom,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Orthanc holding a wrong token: the gateway answers 401, and the script must not record
    the series as forwarded (Orthanc's Lua RestApiPost returns nil instead of raising), so the
    series goes again when the study changes."""
    site = start_site(deploy_with_secrets / "compose", tmp_path, monkeypatch, token_suffix="x")
    try:
        recorded = site.send_and_wait_for_forwarding(small_phantom, tmp_path / "phantom")
    finally:
        site.orthanc.stop()
        site.gateway.stop()
    assert {request["status"] for request in stow_requests(site.gateway)} == {401}
    assert recorded == [""]
