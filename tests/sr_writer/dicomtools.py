"""The external DICOM checkers the tests run on what sr_writer writes.

- ``dciodvfy`` (dicom3tools): IOD/module conformance; prints ``Error - ...`` and ``Warning - ...``.
- ``dsrdump`` (DCMTK): parses an SR document and renders its content tree.
- ``dcmdump`` (DCMTK): parses any Part 10 file.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.requirements import require_executable


@dataclass(frozen=True)
class Verification:
    errors: list[str]
    warnings: list[str]
    output: str


def dciodvfy(path: Path) -> Verification:
    binary = require_executable("dciodvfy", "/usr/bin/dciodvfy")
    result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    lines = output.splitlines()
    return Verification(
        errors=[line for line in lines if line.startswith("Error")],
        warnings=[line for line in lines if line.startswith("Warning")],
        output=output,
    )


def dsrdump(path: Path) -> str:
    binary = require_executable("dsrdump", "/usr/bin/dsrdump")
    result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"dsrdump failed on {path}:\n{result.stdout}{result.stderr}"
    return result.stdout


def dcmdump(path: Path) -> str:
    binary = require_executable("dcmdump", "/usr/bin/dcmdump")
    result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"dcmdump failed on {path}:\n{result.stdout}{result.stderr}"
    assert "E: " not in result.stderr, result.stderr
    return result.stdout


# dciodvfy warnings that are expected, each with the reason it is not ours to fix.
ACCEPTED_WARNINGS: dict[str, str] = {
    # A model's own concepts come with a private coding scheme ("99" prefix, PS3.16 8.2), which
    # is valid but by definition not one of the designators dciodvfy knows (tests use 99FEDGATE).
    "Unrecognized defined term <99": "private coding scheme designator of a model's manifest",
}


def assert_conformant(path: Path) -> Verification:
    """No dciodvfy error; any warning must be listed (with its reason) in ACCEPTED_WARNINGS."""
    verification = dciodvfy(path)
    assert not verification.errors, verification.output
    unexplained = [w for w in verification.warnings if not any(k in w for k in ACCEPTED_WARNINGS)]
    assert not unexplained, verification.output
    return verification
