"""TLS settings and SSL contexts shared by the gateway, the inference service and the hub.

A library like ``sr_writer``: it imports none of the services, so each service (which may not
import the others) takes its ``tls:`` settings from here. Two shapes:

- :class:`ServerTls` for a server (HTTPS by uvicorn, DICOM TLS on the C-STORE SCP): its
  certificate chain and key, and optionally the CA whose client certificates it accepts
  (mutual TLS);
- :class:`ClientTls` for a client (towards the PACS, the inference service, the gateway, the
  sites): the CA that signs the server's certificate, and optionally a client certificate.

Every file is read when the settings are validated, so that a missing or unreadable file, or a
key that does not belong to its certificate, is a start-up error naming the setting (exit
status 2), never a failure of the first connection hours later.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _readable(path: Path, field: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise ValueError(f"{field}: cannot read {path}: {error.strerror}") from None


class ServerTls(_Strict):
    """``tls:`` of a server: ``{certificate, key, client_ca, require_client_certificate}``."""

    #: PEM: the server's certificate, followed by any intermediate CA certificates.
    certificate: Path
    #: PEM: the certificate's private key (unencrypted; protect it by file mode 0600).
    key: Path
    #: PEM: the CA certificate(s) whose client certificates are accepted. None: clients are
    #: not asked for a certificate.
    client_ca: Path | None = None
    #: With ``client_ca``: refuse clients without a valid certificate (default), or (false)
    #: ask for one but let clients without one in (those with a bad one are still refused).
    require_client_certificate: bool = True

    @model_validator(mode="after")
    def _usable(self) -> ServerTls:
        self.context()  # reads every file now: a bad one is a start-up error naming the key
        return self

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        if self.client_ca is None:
            return ssl.CERT_NONE
        return ssl.CERT_REQUIRED if self.require_client_certificate else ssl.CERT_OPTIONAL

    def context(self, context_class: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
        """A server context (of ``context_class``): TLS 1.2 or later, as BCP 195 (and so
        PS3.15 B.9) asks."""
        context = context_class(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_chain(context, self.certificate, self.key)
        if self.client_ca is not None:
            _load_ca(context, self.client_ca, "client_ca")
        context.verify_mode = self.verify_mode
        return context

    def uvicorn_options(self) -> dict[str, Any]:
        """The keyword arguments that make uvicorn serve HTTPS with these settings."""
        return {
            "ssl_certfile": str(self.certificate),
            "ssl_keyfile": str(self.key),
            "ssl_ca_certs": None if self.client_ca is None else str(self.client_ca),
            "ssl_cert_reqs": int(self.verify_mode),
        }


class ClientTls(_Strict):
    """``tls:`` of a client: ``{ca, certificate, key}``, all optional."""

    #: PEM: the CA certificate(s) that sign the server's certificate. None: the system's
    #: trust store (certifi's, as httpx and requests use by default).
    ca: Path | None = None
    #: PEM: a client certificate to present (servers that require one); with ``key``.
    certificate: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _usable(self) -> ClientTls:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("certificate and key go together: set both or neither")
        self.context()
        return self

    @property
    def client_certificate(self) -> tuple[str, str] | None:
        """(certificate, key) for ``requests``' ``cert=``, or None."""
        if self.certificate is None or self.key is None:
            return None
        return str(self.certificate), str(self.key)

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the server's certificate and host name."""
        # PROTOCOL_TLS_CLIENT verifies the certificate and the host name; with ``ca`` only that
        # CA is trusted (a hospital CA), not the public ones besides it.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca is None:
            _load_default_certificates(context)
        else:
            _load_ca(context, self.ca, "ca")
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.certificate is not None and self.key is not None:
            _load_chain(context, self.certificate, self.key)
        return context

    @property
    def requests_verify(self) -> str | bool:
        """``requests``' ``verify=``: the CA file, or True for its default trust store."""
        return True if self.ca is None else str(self.ca)


def uvicorn_options(tls: ServerTls | None) -> dict[str, Any]:
    """uvicorn's keyword arguments for ``listen.tls``: HTTPS with it, none (plain HTTP) without."""
    return {} if tls is None else tls.uvicorn_options()


def client_context(tls: ClientTls | None) -> ssl.SSLContext | bool:
    """httpx's ``verify=`` for ``tls``: its context, or True (httpx's defaults) when unset."""
    return True if tls is None else tls.context()


def _load_chain(context: ssl.SSLContext, certificate: Path, key: Path) -> None:
    _readable(certificate, "certificate")
    _readable(key, "key")
    try:
        context.load_cert_chain(certificate, key)
    except ssl.SSLError as error:
        raise ValueError(
            f"certificate, key: {certificate} and {key} are not a PEM certificate and its "
            f"private key ({_why(error)})"
        ) from None


def _load_ca(context: ssl.SSLContext, path: Path, field: str) -> None:
    _readable(path, field)
    try:
        context.load_verify_locations(cafile=str(path))
    except ssl.SSLError as error:
        raise ValueError(f"{field}: {path} holds no PEM CA certificate ({_why(error)})") from None


def _why(error: ssl.SSLError) -> str:
    # OpenSSL's reason (KEY_VALUES_MISMATCH, NO_START_LINE ...) where it gives one.
    return str(error.reason or error.strerror or error)


def _load_default_certificates(context: ssl.SSLContext) -> None:
    # httpx and requests trust certifi's bundle rather than the system's; keep doing so.
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx and requests
        return
    context.load_verify_locations(cafile=certifi.where())
