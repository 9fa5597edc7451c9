"""The gateway over HTTPS (``listen.tls``): a DICOMweb client that trusts the hospital's CA
stores and searches; clients that do not, or that lack a required client certificate, are
refused; a key file that cannot be read stops the start with exit status 2."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import requests
import yaml
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import PhantomSpec, generate_phantom
from tests.support.dicom import multipart_body, part10_bytes
from tests.support.gateway import GatewayProcess
from tests.support.process import run_fedgate
from tests.support.tls import CertificateAuthority, server_tls


def _client(
    url: str, ca: CertificateAuthority, certificate: tuple[str, str] | None = None
) -> DICOMwebClient:
    session = requests.Session()
    # REQUESTS_CA_BUNDLE, where set, would override ``verify`` (psf/requests#3829).
    session.trust_env = False
    session.verify = str(ca.certificate)
    session.cert = certificate
    return DICOMwebClient(url, session=session)


def test_dicomweb_client_stores_and_searches_over_https(
    tmp_path: Path, ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    server = ca.server("gateway")
    gateway = GatewayProcess(
        tmp_path / "gateway",
        {"listen": {"tls": server_tls(server)}},
        verify=ca.client_context(),
    ).start()
    try:
        assert gateway.url.startswith("https://")
        phantom = generate_phantom(
            PhantomSpec(seed=7, rows=32, columns=32, slices=3, lesion_diameters_mm=())
        )
        client = _client(gateway.dicomweb_url, ca)
        response = client.store_instances(list(phantom.instances()))
        stored = response.get("ReferencedSOPSequence") or []
        assert len(stored) == 3
        # The RetrieveURL a client follows is on the same scheme it came in by.
        assert str(response.RetrieveURL).startswith(f"{gateway.dicomweb_url}/studies/")
        studies = client.search_for_studies(search_filters={"PatientID": phantom.truth.patient_id})
        assert [s["0020000D"]["Value"][0] for s in studies] == [phantom.truth.study_instance_uid]

        # A client that does not trust the CA, and one speaking plain HTTP, get nothing.
        with pytest.raises(requests.exceptions.SSLError):
            _client(gateway.dicomweb_url, other_ca).search_for_studies()
        with pytest.raises(httpx.HTTPError):
            httpx.get(gateway.url.replace("https://", "http://") + "/healthz", timeout=5)
    finally:
        gateway.stop()


def test_client_certificates_required(tmp_path: Path, ca: CertificateAuthority) -> None:
    """With ``listen.tls.client_ca`` only clients with a certificate that CA signed get in."""
    server = ca.server("gateway")
    viewer = ca.client("viewer")
    gateway = GatewayProcess(
        tmp_path / "gateway",
        {"listen": {"tls": server_tls(server, ca)}},
        verify=ca.client_context(viewer),
    ).start()
    try:
        with_certificate = _client(
            gateway.dicomweb_url, ca, (str(viewer.certificate), str(viewer.key))
        )
        assert with_certificate.search_for_studies() == []
        with pytest.raises(requests.exceptions.RequestException):
            _client(gateway.dicomweb_url, ca).search_for_studies()
    finally:
        gateway.stop()


def test_unreadable_key_is_a_startup_error_naming_the_setting(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    server = ca.server("gateway")
    config = tmp_path / "gateway.yaml"
    missing = tmp_path / "no-such-key.pem"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "listen": {"tls": {"certificate": str(server.certificate), "key": str(missing)}},
            }
        )
    )
    result = run_fedgate("gateway", "--config", str(config), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "listen.tls" in result.stderr and "key" in result.stderr
    assert str(missing) in result.stderr


def test_urls_behind_a_tls_terminating_proxy(tmp_path: Path) -> None:
    """nginx in front (docs/tls.md) sends ``Host`` and ``X-Forwarded-Proto``; the URLs the
    gateway hands out are then the proxy's (https, its default port), without
    ``listen.public_url``. uvicorn trusts these headers from FORWARDED_ALLOW_IPS (loopback)."""
    gateway = GatewayProcess(tmp_path / "gateway").start()
    try:
        phantom = generate_phantom(
            PhantomSpec(seed=8, rows=16, columns=16, slices=1, lesion_diameters_mm=())
        )
        body, content_type = multipart_body([part10_bytes(ds) for ds in phantom.instances()])
        response = httpx.post(
            f"{gateway.dicomweb_url}/studies",
            content=body,
            headers={
                "Content-Type": content_type,
                "Accept": "application/dicom+json",
                # What nginx's proxy_set_header lines of docs/tls.md send.
                "Host": "fedgate.hospital.example",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-For": "10.20.30.40",
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        (retrieve_url,) = response.json()["00081190"]["Value"]
        assert retrieve_url == (
            f"https://fedgate.hospital.example/dicomweb/studies/{phantom.truth.study_instance_uid}"
        )
    finally:
        gateway.stop()
