"""A DIMSE C-STORE SCP (PS3.4 Annex B, PS3.7 9.1.1), for PACS and modalities that forward only
over DIMSE.

Every storage SOP class is accepted at association negotiation, with the common transfer
syntaxes, so that an instance the gateway does not take gets a proper C-STORE status
(0x0122 SOP Class Not Supported) instead of a bare refusal of the presentation context. Each
C-STORE is answered only after the instance is durable and catalogued: a success status is
an acknowledgment (DESIGN.md, principle 1).

With ``dimse.tls`` the SCP speaks DICOM over TLS, the TLS Secure Transport Connection Profile
of PS3.15 B.1 (TLS 1.2 or later, as BCP 195 and PS3.15 B.9 ask): the TLS handshake comes
before the A-ASSOCIATE-RQ, so a sender without TLS, or without a certificate that
``dimse.tls.client_ca`` signed, is dropped before it can associate (the SCU sees the
association refused) and the log says why.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from typing import Any

import structlog
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.intake.settings import DimseSettings, is_loopback
from gateway.store import EmbeddedStore, FailureReason, WarningReason

log = structlog.get_logger(__name__)

SUCCESS = 0x0000


class DimseIntake:
    """The SCP: :meth:`start` it beside the HTTP server, :meth:`stop` at shutdown."""

    def __init__(self, store: EmbeddedStore, settings: DimseSettings):
        self.store = store
        self.settings = settings
        self._server: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_associations = self.settings.max_associations
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        callers = self.settings.allowed_callers
        host = self.settings.host
        if callers:
            # pynetdicom rejects other calling AE titles at association (PS3.8 7.1.1.9:
            # A-ASSOCIATE-RJ, permanent, "calling AE title not recognised").
            ae.require_calling_aet = sorted({caller.ae_title for caller in callers})
        elif not is_loopback(host):
            # The rule HTTP follows without auth: nobody but this machine may store.
            log.warning(
                "dimse.loopback_only",
                requested_host=host,
                message="no dimse.allowed_calling_ae_titles configured: "
                "listening on 127.0.0.1 only",
            )
            host = "127.0.0.1"
        tls = self.settings.tls
        self._server = ae.start_server(
            (host, self.settings.port),
            block=False,
            ssl_context=None if tls is None else tls.context(_HandshakeInAssociation),
            evt_handlers=[
                *([(evt.EVT_CONN_OPEN, _tls_handshake)] if tls is not None else []),
                (evt.EVT_REQUESTED, self._check_caller_host),
                (evt.EVT_C_STORE, self._handle_store),
            ],
        )
        log.info(
            "dimse.listening",
            ae_title=self.settings.ae_title,
            host=host,
            port=self.settings.port,
            allowed_calling_ae_titles=[
                f"{c.ae_title}@{c.host}" if c.host else c.ae_title for c in callers
            ]
            or "any, from this machine only",
            tls="off"
            if tls is None
            else f"on, client certificates {_client_certificates(tls.verify_mode)}",
        )

    def _check_caller_host(self, event: Any) -> None:
        """Reject a calling AE title allowed only from other hosts than the caller's.

        The titles themselves are checked by pynetdicom after this handler; a title allowed
        from several hosts is listed once per host.
        """
        callers = self.settings.allowed_callers
        requestor = event.assoc.requestor
        calling = requestor.primitive.calling_ae_title.strip()
        hosts = {c.host for c in callers if c.ae_title.strip() == calling}
        if callers and not hosts:
            # pynetdicom rejects it next; said here so that the log names who tried.
            log.warning(
                "dimse.association_rejected",
                calling_ae_title=calling,
                peer=requestor.address,
                reason="calling AE title not in dimse.allowed_calling_ae_titles",
            )
            return
        if not hosts or None in hosts:
            return  # allowed from any host
        if _same_address(requestor.address, hosts):
            return
        log.warning(
            "dimse.association_rejected",
            calling_ae_title=calling,
            peer=requestor.address,
            reason="calling AE title not allowed from this host",
        )
        # Rejected permanent, by the service user, calling AE title not recognised.
        event.assoc.acse.send_reject(0x01, 0x01, 0x03)
        event.assoc.kill()  # waits until the A-ASSOCIATE-RJ is out, as pynetdicom's own check

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _handle_store(self, event: Any) -> int | Dataset:
        """Store one instance; the returned status is the C-STORE response."""
        calling = event.assoc.requestor.ae_title
        path, handle = self.store.layout.new_temporary()
        try:
            # The dataset as received plus File Meta Information: a Part 10 file.
            handle.write(event.encoded_dataset(include_meta=True))
        except Exception as error:  # e.g. a dataset pynetdicom could not frame
            handle.close()
            path.unlink(missing_ok=True)
            log.warning("dimse.unreadable", calling_ae_title=calling, error=repr(error))
            return int(FailureReason.CANNOT_UNDERSTAND)
        batch = self.store.new_batch()
        outcome = batch.add(path, handle)
        if outcome.stored:
            with self._lock:  # one commit at a time; each C-STORE waits for its own
                batch.commit()
        if outcome.failure is not None:
            log.warning(
                "dimse.refused",
                calling_ae_title=calling,
                sop_instance_uid=outcome.sop_instance_uid,
                reason=f"0x{outcome.failure:04X}",
                comment=outcome.comment,
            )
            # The Error Comment (0000,0902, PS3.7 C.4.2.1.4) says why in words, as STOW-RS does.
            response = Dataset()
            response.Status = int(outcome.failure)
            response.ErrorComment = outcome.comment[:64]
            return response
        log.debug(
            "dimse.stored", calling_ae_title=calling, sop_instance_uid=outcome.sop_instance_uid
        )
        if outcome.warning is WarningReason.COERCION_OF_DATA_ELEMENTS:
            return 0xB000
        if outcome.warning is WarningReason.ELEMENTS_DISCARDED:
            return 0xB006
        return SUCCESS


#: How long a sender may take over its TLS handshake.
_HANDSHAKE_SECONDS = 30.0


class _HandshakeInAssociation(ssl.SSLContext):
    """Defers the TLS handshake from accept() to the association's own thread.

    pynetdicom wraps each accepted socket in its single accept loop, with the handshake done
    there: one client that connects and sends nothing would stall every other sender. With
    the handshake deferred, :func:`_tls_handshake` does it on the association's thread, and a
    failed handshake ends that connection only.
    """

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def _tls_handshake(event: Any) -> None:
    """The TLS handshake of a new connection (on its own thread); a failure is logged with
    its reason (no TLS, no certificate, one our CA did not sign) and the connection closed
    before any DICOM is read from it."""
    association_socket = event.assoc.dul.socket
    connection: ssl.SSLSocket = association_socket.socket
    previous = connection.gettimeout()
    try:
        connection.settimeout(_HANDSHAKE_SECONDS)
        connection.do_handshake()
        connection.settimeout(previous)
    except (OSError, ValueError) as error:
        log.warning(
            "dimse.tls_refused",
            peer=event.address[0] if event.address else None,
            reason=str(getattr(error, "reason", None) or error)[:200],
        )
        association_socket.close()


def _client_certificates(mode: ssl.VerifyMode) -> str:
    return {ssl.CERT_REQUIRED: "required", ssl.CERT_OPTIONAL: "optional"}.get(mode, "not asked")


def _same_address(address: str, hosts: set[str | None]) -> bool:
    """Whether ``address`` is one of ``hosts`` (IPv4-mapped IPv6 compared as IPv4)."""
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(host is not None and ipaddress.ip_address(host) == peer for host in hosts)
