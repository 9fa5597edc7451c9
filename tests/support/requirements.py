"""Finding the real dependencies a test needs (Orthanc, DCMTK, dicom3tools, Chromium, PostgreSQL).

Under ``CI=true`` a missing dependency fails the test: CI installs everything, so absence there
is a broken install step that must be seen. On a developer's machine it skips with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Fail under CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"required test dependency missing under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def require_executable(name: str, *candidates: str) -> str:
    """The path of an executable (by name on PATH, or one of ``candidates``)."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    missing(f"executable {name!r} not found (install the Debian package that provides it)")
    raise AssertionError("unreachable")


def require_file(path: str, what: str) -> Path:
    if not Path(path).is_file():
        missing(f"{what} not found at {path}")
    return Path(path)
