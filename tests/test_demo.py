"""The README's first command: ``fedgate demo`` runs the whole pipeline and prints results."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.gateway import REPO_ROOT
from tests.support.ports import free_port


def test_demo_once_prints_findings_for_every_study(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedgate",
            "demo",
            "--once",
            "--studies",
            "3",
            "--data-dir",
            str(tmp_path / "demo"),
            "--port",
            str(free_port()),
            "--inference-port",
            str(free_port()),
            "--timeout",
            "240",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ...")]
    assert len(rows) == 6  # three studies, two models each
    assert all("| succeeded |" in row for row in rows)
    detector = [row for row in rows if "nodule-detector" in row]
    # The phantoms: 12 mm; 8 and 20 mm; none.
    assert sum(row.count("Nodule:") for row in detector) == 3
    assert sum("no finding" in row for row in detector) == 1
    assert "Diameter 12." in result.stdout and "Diameter 20." in result.stdout
    # It says where the cohort dashboard is (issue 15).
    assert re.search(r"dashboard http://127\.0\.0\.1:\d+/ui/", result.stdout), result.stdout
