"""DCMTK's storescu against a DICOM port, as a modality sends (the real SCU, not pynetdicom)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.requirements import require_executable


def storescu(
    port: int,
    calling_ae_title: str,
    *paths: Path,
    host: str = "127.0.0.1",
    called_ae_title: str = "FEDGATE",
    debug: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Send ``paths`` in one association; ``debug`` (``-d``) prints each response's status
    and Error Comment."""
    return subprocess.run(
        [
            require_executable("storescu"),
            *(["-d"] if debug else []),
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
