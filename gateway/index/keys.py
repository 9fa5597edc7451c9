"""Pseudonymous keys: the index holds no PatientID and no UID, only keyed hashes of them.

Each key is the first 8 bytes of HMAC-SHA-256(site salt, value) read as a signed 64-bit
integer: compact (a BIGINT column), stable across index rebuilds (the salt is kept), and
useless outside the site, because the salt never leaves ``data_dir``. 64 bits make a collision
among a site's ten million patients about a one-in-300-billion event.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SALT_FILE_NAME = "index-salt"
_SALT_BYTES = 32


def load_or_create_salt(data_dir: Path) -> bytes:
    """The site's salt, generated once (owner-readable only) and read back afterwards."""
    path = data_dir / SALT_FILE_NAME
    if path.exists():
        salt = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(salt) != _SALT_BYTES:
            raise ValueError(f"{path} does not hold a {_SALT_BYTES}-byte hexadecimal salt")
        return salt
    data_dir.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_bytes(_SALT_BYTES)
    temporary = path.with_suffix(".tmp")
    # O_EXCL + rename: two replicas starting at once cannot end up with different salts.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(salt.hex())
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return load_or_create_salt(data_dir)


class Pseudonymizer:
    """Turns identifiers (PatientID, UIDs) into salted 64-bit keys."""

    def __init__(self, salt: bytes):
        self._salt = salt

    def key(self, kind: str, value: str) -> int:
        """The key of ``value``; ``kind`` separates name spaces (a patient vs. a study)."""
        digest = hmac.new(self._salt, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def patient(self, patient_id: str, issuer: str = "") -> int:
        return self.key("patient", f"{issuer}\x00{patient_id.strip()}")

    def study(self, study_instance_uid: str) -> int:
        return self.key("study", study_instance_uid.strip())

    def series(self, series_instance_uid: str) -> int:
        return self.key("series", series_instance_uid.strip())

    def report(self, sop_instance_uid: str) -> int:
        return self.key("report", sop_instance_uid.strip())
