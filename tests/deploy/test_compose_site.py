"""The compose site's wiring with real Orthanc and a real gateway (no containers: Debian's
Orthanc and `fedgate gateway` as processes): compose's orthanc.json and gateway.yaml with the
secrets make-secrets.sh wrote, changed only in hosts, ports and paths. Orthanc forwards a stable
study with the forwarder token it reads from its environment, and the gateway reads the study
back from Orthanc with its password."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
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


def test_orthanc_forwards_with_its_token_and_the_gateway_reads_back_with_its_password(
    deploy_with_secrets: Path,
    small_phantom: Phantom,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = deploy_with_secrets / "compose"
    gateway_env = read_env_file(compose / "secrets" / "gateway.env")
    orthanc_env = read_env_file(compose / "secrets" / "orthanc.env")

    orthanc = OrthancServer(tmp_path / "orthanc")
    orthanc.http_port, orthanc.dicom_port = free_port(), free_port()
    gateway = GatewayProcess(tmp_path / "gateway")
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
    orthanc.overrides = {
        key: value
        for key, value in shipped.items()
        if key not in ("Name", "StorageDirectory", "IndexDirectory", "HttpPort", "DicomPort")
        and key not in ("Plugins", "LuaScripts")
    }
    orthanc.overrides["LuaScripts"] = [str(REPOSITORY / "deploy/orthanc/forward-to-fedgate.lua")]
    orthanc.overrides["DicomWeb"] = {
        **shipped["DicomWeb"],
        "Servers": {"fedgate": {**server, "Url": gateway.dicomweb_url + "/"}},
    }
    orthanc.overrides["StableAge"] = 2  # not a minute per test
    for name, value in orthanc_env.items():
        monkeypatch.setenv(name, value)

    gateway.start()
    orthanc.start()
    try:
        login = ("fedgate", orthanc_env["ORTHANC_FEDGATE_PASSWORD"])
        with httpx.Client(base_url=orthanc.url, timeout=30) as client:
            assert client.get("/system").status_code == 401  # authentication is on
            for instance in small_phantom.write(tmp_path / "phantom"):
                stored = client.post("/instances", content=instance.read_bytes(), auth=login)
                assert stored.status_code == 200, stored.text
            # Orthanc's STOW-RS requests as the gateway logged them (the Lua script's own record,
            # the series' FedgateForwardedInstances, is written even when the gateway refused:
            # Orthanc 1.10's DICOMweb plugin does not fail a synchronous STOW on a 401).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not stow_requests(gateway):
                time.sleep(0.5)
        assert stow_requests(gateway), f"nothing forwarded; gateway log:\n{gateway.log()}"
        assert {request["status"] for request in stow_requests(gateway)} == {200}

        # Reading goes to Orthanc with the gateway's pacs.auth password.
        studies = httpx.get(
            f"{gateway.dicomweb_url}/studies",
            headers={"Authorization": f"Bearer {reader_token}", "Accept": "application/dicom+json"},
            timeout=30,
        )
        assert studies.status_code == 200, studies.text
        uids = [study["0020000D"]["Value"][0] for study in studies.json()]
        assert uids == [small_phantom.truth.study_instance_uid]
    finally:
        orthanc.stop()
        gateway.stop()
