"""Orthanc from Debian sends to the gateway's SCP over DICOM TLS (PS3.15 B.1), as a hospital's
PACS forwards: Orthanc's own DICOM TLS (``DicomTlsEnabled`` and its certificate, key and
trusted certificates; ``UseDicomTls`` for the gateway as a modality), nothing else beyond the
test support's defaults. Orthanc's DICOM TLS is DCMTK's, not the web server that cannot serve
HTTPS on Debian 12 (test_pacs_https.py)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from fedgate.phantom import PhantomSpec, generate_phantom
from tests.support.dicom import multipart_body, part10_bytes
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.tls import CertificateAuthority, server_tls

pytestmark = [pytest.mark.orthanc]


def test_orthanc_forwards_over_dicom_tls(tmp_path: Path, ca: CertificateAuthority) -> None:
    port = free_port()
    gateway = GatewayProcess(
        tmp_path / "gateway",
        {
            "dimse": {
                "enabled": True,
                "port": port,
                "tls": server_tls(ca.server("gateway-scp"), ca),
            }
        },
    ).start()
    orthanc_identity = ca.client("orthanc")
    orthanc = OrthancServer(
        tmp_path / "orthanc",
        overrides={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(orthanc_identity.certificate),
            "DicomTlsPrivateKey": str(orthanc_identity.key),
            "DicomTlsTrustedCertificates": str(ca.certificate),
            "DicomModalities": {
                "fedgate": {
                    "AET": "FEDGATE",
                    "Host": "127.0.0.1",
                    "Port": port,
                    "UseDicomTls": True,
                }
            },
        },
    ).start()
    try:
        phantom = generate_phantom(
            PhantomSpec(seed=31, rows=32, columns=32, slices=3, lesion_diameters_mm=())
        )
        body, content_type = multipart_body([part10_bytes(ds) for ds in phantom.instances()])
        stored = httpx.post(
            f"{orthanc.dicomweb_url}/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            timeout=30,
        )
        assert stored.status_code == 200, stored.text
        study = phantom.truth.study_instance_uid
        (orthanc_id,) = [
            item["ID"]
            for item in httpx.post(f"{orthanc.url}/tools/lookup", content=study).json()
            if item["Type"] == "Study"
        ]
        sent = httpx.post(f"{orthanc.url}/modalities/fedgate/store", json=[orthanc_id], timeout=60)
        assert sent.status_code == 200, sent.text

        held: list[object] = []
        deadline = time.monotonic() + 20
        while len(held) < 3 and time.monotonic() < deadline:
            response = httpx.get(f"{gateway.dicomweb_url}/studies/{study}/instances", timeout=10)
            held = response.json() if response.status_code == 200 else []
            time.sleep(0.2)
        assert len(held) == 3
        assert "dimse.tls_refused" not in gateway.log()
    finally:
        orthanc.stop()
        gateway.stop()
