"""UID syntax (PS3.5 9.1): dot-separated numeric components, no leading zeros, at most 64 chars."""

from __future__ import annotations

import re

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID.match(value))


class InvalidUIDError(ValueError):
    pass


def require_valid_uid(value: object, name: str = "UID") -> str:
    if not is_valid_uid(value):
        shown = value if isinstance(value, str) and len(value) <= 80 else repr(value)[:80]
        raise InvalidUIDError(f"{name} {shown!r} is not a valid DICOM UID (PS3.5 9.1)")
    assert isinstance(value, str)
    return value
