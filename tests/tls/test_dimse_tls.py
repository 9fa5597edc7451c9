"""DICOM TLS on the gateway's C-STORE SCP (``dimse.tls``; PS3.15 B.1, the TLS Secure Transport
Connection Profile), with DCMTK's storescu as the modality: with TLS and a client certificate
the hospital's CA signed it stores; without TLS, without a certificate, or with one another CA
signed it does not."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
from pydicom import dcmread

from fedgate.phantom import PhantomSpec, generate_phantom
from tests.support.dimse import storescu, tls_options
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port
from tests.support.tls import CertificateAuthority, server_tls


def test_storescu_over_tls(
    tmp_path: Path, ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    server = ca.server("gateway-scp")
    modality = ca.client("modality")
    impostor = other_ca.client("impostor")
    port = free_port()
    gateway = GatewayProcess(
        tmp_path / "gateway",
        {
            "dimse": {
                "enabled": True,
                "port": port,
                "tls": server_tls(server, ca),
            }
        },
    ).start()
    phantom = generate_phantom(
        PhantomSpec(seed=11, rows=32, columns=32, slices=4, lesion_diameters_mm=())
    )
    files = phantom.write(tmp_path / "files")

    def held() -> set[str]:
        response = httpx.get(
            f"{gateway.dicomweb_url}/studies/{phantom.truth.study_instance_uid}/instances",
            timeout=10,
        )
        if response.status_code == 404:
            return set()
        response.raise_for_status()
        return {item["00080018"]["Value"][0] for item in response.json()}

    try:
        # A connection that never starts its handshake must not hold up the others
        # (pynetdicom's accept loop would otherwise do the handshake itself).
        with socket.create_connection(("127.0.0.1", port)):
            stored = storescu(
                port,
                "MODALITY",
                files[0],
                files[1],
                options=tls_options(ca.certificate, modality.certificate, modality.key),
            )
        assert stored.returncode == 0, stored.stderr
        sent = {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files[:2]}
        assert held() == sent

        plain = storescu(port, "MODALITY", files[2])
        no_certificate = storescu(port, "MODALITY", files[2], options=tls_options(ca.certificate))
        wrong_certificate = storescu(
            port,
            "MODALITY",
            files[3],
            options=tls_options(ca.certificate, impostor.certificate, impostor.key),
        )
        for refused in (plain, no_certificate, wrong_certificate):
            assert refused.returncode != 0
            assert "Association Request Failed" in refused.stderr, refused.stderr
        assert held() == sent
        # The operator reads why in the gateway's log, one line per refused sender.
        reasons = [
            json.loads(line).get("reason")
            for line in gateway.log().splitlines()
            if '"dimse.tls_refused"' in line
        ]
        for reason in (
            "WRONG_VERSION_NUMBER",  # plain DICOM on the TLS port
            "PEER_DID_NOT_RETURN_A_CERTIFICATE",
            "CERTIFICATE_VERIFY_FAILED",  # a certificate our CA did not sign
        ):
            assert reason in reasons, reasons
        # A sender that does not trust the CA of the SCP's certificate does not send either.
        distrustful = storescu(
            port,
            "MODALITY",
            files[2],
            options=tls_options(other_ca.certificate, modality.certificate, modality.key),
        )
        assert distrustful.returncode != 0
        assert "certificate verify failed" in distrustful.stderr, distrustful.stderr
        assert held() == sent
    finally:
        gateway.stop()
