"""The gateway's upstream PACS over HTTPS with a client certificate (``pacs.tls``).

The brief's peer is Orthanc from Debian with ``SslEnabled`` and, for client certificates,
``SslVerifyPeers`` and ``SslTrustedClientCertificates`` (nothing else beyond the test support's
defaults). Debian 12's Orthanc 1.10.1 cannot serve HTTPS: its libcivetweb1 (1.15) crashes on
the first TLS connection (SIGSEGV, a call through a null pointer in a civetweb worker thread,
with RSA or EC certificates, with or without ``SslVerifyPeers``; docs/tls.md). That case is a
strict xfail, which turns into a failure the day the package is fixed, so that this test is then
pointed at Orthanc. Until then the same checks run against another real HTTPS DICOMweb archive
that requires client certificates: a second fedgate gateway (``listen.tls.client_ca``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedgate.phantom import PhantomSpec, generate_phantom
from tests.support.dicom import multipart_body, part10_bytes
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer
from tests.support.tls import CertificateAuthority, Issued, client_tls, server_tls

ORTHANC_CRASHES = (
    "Debian 12's Orthanc 1.10.1 (libcivetweb1 1.15 with OpenSSL 3) segfaults on its first "
    "HTTPS connection"
)


@contextmanager
def https_archive(
    kind: str, workdir: Path, ca: CertificateAuthority, client: Issued
) -> Iterator[str]:
    """A real DICOMweb archive over HTTPS that requires a client certificate ``ca`` signed;
    yields its DICOMweb root."""
    server = ca.server(f"{kind}-archive")
    if kind == "orthanc":
        orthanc = OrthancServer(
            workdir,
            overrides={
                "SslEnabled": True,
                "SslCertificate": str(server.combined),
                "SslVerifyPeers": True,
                "SslTrustedClientCertificates": str(ca.certificate),
            },
            verify=ca.client_context(client),
        ).start()
        try:
            yield orthanc.dicomweb_url
        finally:
            orthanc.stop()
        return
    archive = GatewayProcess(
        workdir,
        {"listen": {"tls": server_tls(server, ca)}},
        verify=ca.client_context(client),
    ).start()
    try:
        yield archive.dicomweb_url
    finally:
        archive.stop()


def _gateway(workdir: Path, pacs_url: str, tls: dict[str, str]) -> GatewayProcess:
    return GatewayProcess(
        workdir,
        {
            "pacs": {"url": pacs_url, "tls": tls, "retries": 0},
            "ingest": {"forward_to_pacs": True},
        },
    ).start()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            "orthanc",
            marks=[
                pytest.mark.orthanc,
                pytest.mark.xfail(strict=True, raises=RuntimeError, reason=ORTHANC_CRASHES),
            ],
        ),
        "gateway",
    ],
)
def test_upstream_pacs_over_https_with_a_client_certificate(
    kind: str, tmp_path: Path, ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    gateway_certificate = ca.client("gateway")
    with https_archive(kind, tmp_path / "archive", ca, gateway_certificate) as pacs_url:
        assert pacs_url.startswith("https://")
        gateway = _gateway(tmp_path / "gateway", pacs_url, client_tls(ca, gateway_certificate))
        try:
            phantom = generate_phantom(
                PhantomSpec(seed=21, rows=32, columns=32, slices=3, lesion_diameters_mm=())
            )
            study = phantom.truth.study_instance_uid
            body, content_type = multipart_body([part10_bytes(ds) for ds in phantom.instances()])
            stored = httpx.post(
                f"{gateway.dicomweb_url}/studies",
                content=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                timeout=30,
            )
            assert stored.status_code == 200, stored.text
            # Forwarded to the archive over HTTPS; what it holds, asked directly.
            held: list[Any] = []
            deadline = time.monotonic() + 30
            while len(held) < 3 and time.monotonic() < deadline:
                response = httpx.get(
                    f"{pacs_url}/studies/{study}/instances",
                    verify=ca.client_context(gateway_certificate),
                    timeout=10,
                )
                held = response.json() if response.status_code == 200 else []
                time.sleep(0.3)
            assert len(held) == 3, gateway.log()[-3000:]
            # Searched through the gateway, which asks the archive (QIDO-RS over HTTPS).
            found = httpx.get(
                f"{gateway.dicomweb_url}/studies", params={"StudyInstanceUID": study}, timeout=30
            )
            assert found.status_code == 200, found.text
            assert [s["0020000D"]["Value"][0] for s in found.json()] == [study]
        finally:
            gateway.stop()

        # Without the client certificate, or trusting another CA, the archive cannot be used
        # and the gateway says so: a 502 naming the upstream, not a hang or a crash.
        for name, tls in {
            "no-certificate": client_tls(ca, None),
            "wrong-ca": client_tls(other_ca, gateway_certificate),
        }.items():
            refused = _gateway(tmp_path / f"gateway-{name}", pacs_url, tls)
            try:
                answer = httpx.get(f"{refused.dicomweb_url}/studies", timeout=30)
                assert answer.status_code == 502, (name, answer.text)
                assert "upstream PACS" in answer.text, answer.text
            finally:
                refused.stop()
