"""Test certificates, generated at test time: a CA, server certificates for 127.0.0.1 and
localhost, client certificates, and a second, unrelated CA (the "wrong CA" of the tests).

One helper for every TLS test (HTTPS of the three services, DICOM TLS, Orthanc over HTTPS).
Keys are EC P-256: quick to generate, and accepted by OpenSSL, DCMTK and Orthanc (CivetWeb).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files; ``combined`` holds both (Orthanc wants that)."""

    certificate: Path
    key: Path
    combined: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedgate tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class CertificateAuthority:
    """A test CA in ``directory``; :meth:`server` and :meth:`client` issue certificates."""

    def __init__(self, directory: Path, name: str = "fedgate test CA"):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = _name(name)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.certificate = directory / "ca.pem"
        self.certificate.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))

    def server(self, name: str = "server") -> Issued:
        """A server certificate for 127.0.0.1, ::1 and localhost."""
        return self._issue(
            name,
            "server",
            ExtendedKeyUsageOID.SERVER_AUTH,
            [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ],
        )

    def client(self, name: str = "client") -> Issued:
        """A client certificate whose subject's common name is ``name``."""
        return self._issue(name, "client", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _issue(
        self,
        name: str,
        role: str,
        usage: x509.ObjectIdentifier,
        alternative_names: list[x509.GeneralName],
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if alternative_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternative_names), critical=False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        # One name may be both a server and a client (a gateway is both): one file set each.
        certificate_path = self.directory / f"{name}.{role}.crt"
        key_path = self.directory / f"{name}.{role}.key"
        combined_path = self.directory / f"{name}.{role}.pem"
        certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
        certificate_path.write_bytes(certificate_pem)
        _write_key(key, key_path)
        combined_path.write_bytes(certificate_pem + key_path.read_bytes())
        combined_path.chmod(0o600)
        return Issued(certificate_path, key_path, combined_path)

    def client_context(self, client: Issued | None = None) -> ssl.SSLContext:
        """An SSL context trusting this CA only, presenting ``client`` if given (for httpx's
        ``verify=``)."""
        context = ssl.create_default_context(cafile=str(self.certificate))
        if client is not None:
            context.load_cert_chain(client.certificate, client.key)
        return context


def server_tls(server: Issued, client_ca: CertificateAuthority | None = None) -> dict[str, str]:
    """A server's ``tls:`` settings (``listen.tls``, ``dimse.tls``) for ``server``; with
    ``client_ca``, clients need a certificate that CA signed."""
    settings = {"certificate": str(server.certificate), "key": str(server.key)}
    if client_ca is not None:
        settings["client_ca"] = str(client_ca.certificate)
    return settings


def client_tls(ca: CertificateAuthority, client: Issued | None = None) -> dict[str, str]:
    """A client's ``tls:`` settings (``pacs.tls``, ``sites[].tls`` ...): trust ``ca``, present
    ``client`` if given."""
    settings = {"ca": str(ca.certificate)}
    if client is not None:
        settings.update(certificate=str(client.certificate), key=str(client.key))
    return settings
