"""``fedgate doctor`` against real deployments: Orthanc (Debian, its defaults; and one with a
registered user), the inference service with the bundled models, a gateway configuration.

A healthy one exits 0 with every check ok; each misconfiguration exits 1 and its line says
what is wrong in words a PACS administrator acts on.
"""

from __future__ import annotations

import email.utils
import ssl
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom
from tests.support.http_server import LoopbackHTTPServer
from tests.support.inference import InferenceProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.process import run_fedgate

pytestmark = [pytest.mark.orthanc]

ORTHANC_USER, ORTHANC_PASSWORD = "fedgate", "right-password"


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, small_phantom: Phantom
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("doctor")
    orthanc = OrthancServer(root / "orthanc").start()
    secured = OrthancServer(
        root / "secured",
        aet="SECURED",
        overrides={
            "AuthenticationEnabled": True,
            "RegisteredUsers": {ORTHANC_USER: ORTHANC_PASSWORD},
        },
    ).start()
    inference = InferenceProcess(root / "inference", models_dir).start()
    try:
        # A study in the PACS, so that its REST API's /studies is not an empty list either.
        DICOMwebClient(orthanc.dicomweb_url).store_instances(list(small_phantom.instances()))
        yield {"root": root, "orthanc": orthanc, "secured": secured, "inference": inference}
    finally:
        inference.stop()
        secured.stop()
        orthanc.stop()


def _settings(deployment: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "data_dir": str(deployment["root"] / "data"),
        "pacs": {"url": deployment["orthanc"].dicomweb_url},
        "routing": [
            {
                "name": "chest-ct",
                "match": {"Modality": "CT"},
                "models": ["nodule-detector"],
                "inference_url": deployment["inference"].url,
            }
        ],
        "dimse": {"enabled": True, "port": free_port()},
    }
    settings.update(overrides)
    return settings


def _doctor(
    deployment: dict[str, Any], name: str, settings: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    config = deployment["root"] / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings))
    return run_fedgate("doctor", "--config", str(config), timeout=120)


def _line(output: str, status: str, check: str) -> str:
    lines = [line for line in output.splitlines() if line.split()[:2] == [status, f"{check}:"]]
    assert lines, f"no {status} {check} line in:\n{output}"
    return lines[0]


def test_a_healthy_deployment_passes_every_check(deployment: dict[str, Any]) -> None:
    result = _doctor(deployment, "healthy", _settings(deployment))
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("settings", "pacs", "clock", "auth", "routing", "inference", "data_dir", "disk"):
        _line(result.stdout, "ok", check)
    assert "answers QIDO-RS" in _line(result.stdout, "ok", "pacs")
    assert "is free for the C-STORE SCP" in _line(result.stdout, "ok", "dimse")
    assert not [line for line in result.stdout.splitlines() if line.startswith("problem")]
    assert "healthy: 0 problem(s)" in result.stdout
    # The slow checks said what they were doing, on stderr.
    assert "asking the PACS" in result.stderr


def test_a_pacs_url_where_nothing_listens(deployment: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    result = _doctor(deployment, "nothing", _settings(deployment, pacs={"url": url}))
    assert result.returncode == 1
    line = _line(result.stdout, "problem", "pacs")
    assert f"cannot connect to {url}" in line and "is the PACS running" in line


def test_orthancs_rest_api_instead_of_its_dicomweb_root(deployment: dict[str, Any]) -> None:
    url = deployment["orthanc"].url  # .../dicom-web forgotten
    result = _doctor(deployment, "rest", _settings(deployment, pacs={"url": url}))
    assert result.returncode == 1
    assert "not a DICOMweb root" in _line(result.stdout, "problem", "pacs")


def test_a_path_that_is_not_dicomweb_at_all(deployment: dict[str, Any]) -> None:
    url = deployment["orthanc"].url + "/no-such-root"
    result = _doctor(deployment, "404", _settings(deployment, pacs={"url": url}))
    assert result.returncode == 1
    line = _line(result.stdout, "problem", "pacs")
    assert "answered 404" in line and "not a DICOMweb root" in line


def test_credentials_the_pacs_refuses(deployment: dict[str, Any]) -> None:
    secured = deployment["secured"].dicomweb_url
    wrong = {"type": "basic", "username": ORTHANC_USER, "password": "wrong-password"}
    result = _doctor(
        deployment, "wrong", _settings(deployment, pacs={"url": secured, "auth": wrong})
    )
    assert result.returncode == 1
    line = _line(result.stdout, "problem", "pacs")
    assert "answered 401" in line and "refused our credentials" in line
    bearer = {"type": "bearer", "token": "not-a-token-orthanc-knows"}
    result = _doctor(
        deployment, "bearer", _settings(deployment, pacs={"url": secured, "auth": bearer})
    )
    assert result.returncode == 1
    assert "refused our credentials" in _line(result.stdout, "problem", "pacs")
    result = _doctor(deployment, "none", _settings(deployment, pacs={"url": secured}))
    assert "pacs.auth is not set" in _line(result.stdout, "problem", "pacs")
    # The right ones pass: it was the credentials, not the server.
    right = {**wrong, "password": ORTHANC_PASSWORD}
    result = _doctor(
        deployment, "right", _settings(deployment, pacs={"url": secured, "auth": right})
    )
    assert result.returncode == 0, result.stdout
    _line(result.stdout, "ok", "pacs")


def test_a_routing_rule_naming_a_model_not_served(deployment: dict[str, Any]) -> None:
    settings = _settings(deployment)
    settings["routing"].append(
        {
            "name": "brain-mr",
            "match": {"Modality": "MR"},
            "models": ["brain-tumour-v2"],
            "inference_url": deployment["inference"].url,
        }
    )
    result = _doctor(deployment, "missing-model", settings)
    assert result.returncode == 1
    line = _line(result.stdout, "problem", "inference")
    assert "routing rule 'brain-mr' names model 'brain-tumour-v2'" in line
    assert "nodule-detector" in line  # what it does serve
    assert "chest-ct" not in line


def test_an_inference_service_that_does_not_answer(deployment: dict[str, Any]) -> None:
    settings = _settings(deployment)
    settings["routing"][0]["inference_url"] = f"http://127.0.0.1:{free_port()}"
    result = _doctor(deployment, "no-inference", settings)
    assert result.returncode == 1
    line = _line(result.stdout, "problem", "inference")
    assert "chest-ct" in line and "is the inference service running" in line


def test_auth_on_without_a_callback_token_and_open_listening(deployment: dict[str, Any]) -> None:
    auth = {"clients": [{"name": "ops", "token_sha256": "a" * 64, "roles": ["admin"]}]}
    result = _doctor(deployment, "no-callback", _settings(deployment, auth=auth))
    assert result.returncode == 1
    assert "pipeline.callback_token is not set" in _line(result.stdout, "problem", "auth")
    # No auth but listen.host off loopback: a warning, not a failure (the gateway stays local).
    result = _doctor(deployment, "open", _settings(deployment, listen={"host": "0.0.0.0"}))
    assert result.returncode == 0, result.stdout
    assert "loopback only" in _line(result.stdout, "warning", "auth")


def test_an_unreadable_settings_file(deployment: dict[str, Any]) -> None:
    result = _doctor(deployment, "typo", {"pacs": {"ulr": "http://pacs"}})
    assert result.returncode == 1
    assert "pacs.ulr" in _line(result.stdout, "problem", "settings")


class SkewedPacs(LoopbackHTTPServer):
    """A DICOMweb root whose clock is two minutes behind ours (its HTTP Date header)."""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def date_time_string(self, timestamp: float | None = None) -> str:
                return email.utils.formatdate(time.time() - 120, usegmt=True)

            def do_GET(self) -> None:
                body = b"[]"
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def test_a_clock_two_minutes_off_the_pacs_is_a_warning(deployment: dict[str, Any]) -> None:
    pacs = SkewedPacs()
    pacs.start_serving()
    try:
        url = f"http://127.0.0.1:{pacs.port}/dicom-web"
        result = _doctor(deployment, "skew", _settings(deployment, pacs={"url": url}))
    finally:
        pacs.stop()
    assert result.returncode == 0, result.stdout
    line = _line(result.stdout, "warning", "clock")
    assert "ahead of the PACS" in line and "NTP" in line


class SelfSignedPacs(SkewedPacs):
    """The same small DICOMweb root behind HTTPS with a certificate nobody here trusts."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def start_serving(self) -> None:
        super().start_serving()
        assert self._server is not None
        certificate, key = _self_signed(self.workdir)
        self.certificate = certificate
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)


def _self_signed(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, as an administrator would make one)."""
    certificate, key = workdir / "pacs.crt", workdir / "pacs.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
    )
    return certificate, key


def test_a_pacs_certificate_not_trusted_here(deployment: dict[str, Any]) -> None:
    pacs = SelfSignedPacs(deployment["root"])
    pacs.start_serving()
    try:
        url = f"https://127.0.0.1:{pacs.port}/dicom-web"
        result = _doctor(deployment, "tls", _settings(deployment, pacs={"url": url}))
        # The same server over plain HTTP: a TLS port spoken to without TLS.
        plain = _doctor(
            deployment, "plain", _settings(deployment, pacs={"url": url.replace("https", "http")})
        )
        # With its CA in pacs.tls.ca (here the certificate itself), as the gateway would use it.
        trusted = _doctor(
            deployment,
            "trusted",
            _settings(deployment, pacs={"url": url, "tls": {"ca": str(pacs.certificate)}}),
        )
    finally:
        pacs.stop()
    assert result.returncode == 1
    line = _line(result.stdout, "problem", "pacs")
    assert line.startswith(f"problem  pacs: TLS with {url} failed")
    assert "certificate" in line and "trust" in line
    assert plain.returncode == 1
    assert "Try https://" in _line(plain.stdout, "problem", "pacs")
    assert "answers QIDO-RS" in _line(trusted.stdout, "ok", "pacs")
