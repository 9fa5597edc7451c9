"""Protection options over real processes: TLS on the SuperLink, SuperNode authentication by
registered keys, and client-side clipping of each site's update (Flower's DP wrappers)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import numpy as np
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.learning.cohorts import PLAN
from tests.learning.federation import start_federation
from tests.support.process import run_fedgate


def _certificates(folder: Path) -> dict[str, str]:
    """A CA and a certificate for 127.0.0.1 signed by it (PEM files)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedgate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {
        "ca_certfile": (folder / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        "certfile": (folder / "server.pem", certificate.public_bytes(serialization.Encoding.PEM)),
        "keyfile": (
            folder / "server.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {name: str(path) for name, (path, _) in files.items()}


def _node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's key pair in OpenSSH format (EC P-384), as Flower reads them."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = folder / f"{name}.key"
    public = folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


def test_tls_registered_supernodes_only_and_clipped_updates(tmp_path: Path) -> None:
    tls = _certificates(tmp_path)
    federation = start_federation(
        tmp_path / "federation",
        patients=120,
        sites=2,
        record=False,
        learning={"tls": tls, "supernode_auth": True},
        start_sites=False,
    )
    try:
        registered, unregistered = federation.sites
        key, public = _node_key(tmp_path, registered.name)
        other_key, _ = _node_key(tmp_path, unregistered.name)
        hub_yaml = tmp_path / "hub.yaml"
        hub_yaml.write_text(yaml.safe_dump(federation.hub_config()))
        registration = run_fedgate(
            "learn",
            "register-site",
            "--hub-config",
            str(hub_yaml),
            str(public),
            "--name",
            registered.name,
        )
        assert registration.returncode == 0, registration.stderr
        # With SuperNode authentication the SuperLink keeps its state (the registrations) in
        # a file, which survives its restart.
        assert (federation.root / "superlink" / "superlink.db").stat().st_size > 0
        root = ["--root-certificates", tls["ca_certfile"]]
        federation.start_site(registered, *root, "--auth-key", str(key))
        federation.start_site(unregistered, *root, "--auth-key", str(other_key))
        # One big gradient step, clipped at the site to norm 0.5 (no noise: exact).
        plan = PLAN.replace(
            "model: {family: logistic_regression}",
            "model: {family: logistic_regression, learning_rate: 50}",
        ) + (
            "rounds: 1\nmin_sites: 1\n"
            "protection: {differential_privacy: {clipping_norm: 0.5, noise_multiplier: 0.0}}\n"
        )
        for site in federation.sites:
            site.approve(plan)
        result = federation.run(plan, timeout_seconds=30)
        assert result.returncode == 0, result.progress[-3000:]
        report = result.report
        # Only the SuperNode whose key the hub registered took part, over TLS.
        assert report["sites"] == [registered.name]
        update = np.concatenate([np.ravel(array) for array in report["parameters"]])
        assert abs(np.linalg.norm(update) - 0.5) < 1e-9
    finally:
        federation.stop()
