"""DCMTK's storescu against a DICOM port, as a modality sends (the real SCU, not pynetdicom)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.requirements import require_executable


def storescu(
    port: int,
    calling_ae_title: str,
    *paths: Path,
    host: str = "127.0.0.1",
    called_ae_title: str = "FEDGATE",
    debug: bool = False,
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Send ``paths`` in one association; ``debug`` (``-d``) prints each response's status
    and Error Comment; ``options``: more of storescu's, e.g. its TLS ones (:func:`tls_options`)."""
    return subprocess.run(
        [
            require_executable("storescu"),
            *(["-d"] if debug else []),
            *options,
            "-aet",
            calling_ae_title,
            "-aec",
            called_ae_title,
            host,
            str(port),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def tls_options(ca: Path, certificate: Path | None = None, key: Path | None = None) -> list[str]:
    """storescu's DICOM TLS options (DCMTK built with OpenSSL): ``+tls KEY CERT`` to present a
    client certificate, else ``+tla`` (TLS without one); ``+cf CA`` to verify the SCP by."""
    own = ["+tls", str(key), str(certificate)] if certificate and key else ["+tla"]
    return [*own, "+cf", str(ca)]
