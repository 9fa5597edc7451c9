"""Shared helpers for the converter tests: a mapping, tables, and the dciodvfy check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.requirements import require_executable

# dciodvfy warnings that are accepted, each with why:
ACCEPTED_WARNINGS = (
    # The DICOMDIR (media storage) profile wants Study Date/Time/ID to build a directory record.
    # They are Type 2 in the IODs (present, may be empty): a table of clinical values has no
    # study date, and no converted object has a Study ID that a modality assigned.
    "Missing attribute or value that would be needed to build DICOMDIR - Study Date",
    "Missing attribute or value that would be needed to build DICOMDIR - Study Time",
    "Missing attribute or value that would be needed to build DICOMDIR - Study ID",
)

MAPPING = {
    "columns": {
        "age": {
            "concept": {"scheme": "DCM", "code": "121033", "meaning": "Subject Age"},
            "unit": {"code": "a", "meaning": "year"},
        },
        "lvef": {
            "concept": {"scheme": "LN", "code": "10230-1", "meaning": "LV ejection fraction"},
            "unit": {"code": "%", "meaning": "percent"},
        },
        "weight": {
            "concept": {"scheme": "LN", "code": "29463-7", "meaning": "Body weight"},
            "unit": "kg",
        },
        "smoking": {
            "concept": {"scheme": "SCT", "code": "365981007", "meaning": "Tobacco smoking"},
            "values": {
                "never": {"scheme": "SCT", "code": "266919005", "meaning": "Never smoked tobacco"},
                "former": {"scheme": "SCT", "code": "8517006", "meaning": "Ex-smoker"},
                "current": {"scheme": "SCT", "code": "77176002", "meaning": "Smoker"},
            },
        },
    },
    "ignore": ["comment"],
}


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(MAPPING, indent=2))
    return path


def dciodvfy_problems(path: Path) -> tuple[list[str], list[str]]:
    """``(errors, unexpected warnings)`` that dciodvfy reports for a Part 10 file."""
    binary = require_executable("dciodvfy")
    result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [
        line
        for line in lines
        if line.startswith("Warning") and not any(ok in line for ok in ACCEPTED_WARNINGS)
    ]
    return errors, warnings


def assert_valid_dicom(path: Path) -> None:
    errors, warnings = dciodvfy_problems(path)
    assert errors == [], f"dciodvfy errors in {path.name}: {errors}"
    assert warnings == [], f"dciodvfy warnings not accounted for in {path.name}: {warnings}"
