"""``fedgate findings``: the command line prints what read_findings sees in SR files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pydicom.dataset import Dataset

from fedgate.phantom import Phantom
from sr_writer import Findings, build_sr
from tests.sr_writer.builders import lesion_findings
from tests.sr_writer.npm import REPO_ROOT


def test_findings_command_prints_json_and_flags_non_reports(
    lesion_phantom: Phantom, phantom_datasets: list[Dataset], tmp_path: Path
) -> None:
    findings = lesion_findings(lesion_phantom, phantom_datasets)
    report = tmp_path / "sr.dcm"
    build_sr(findings, phantom_datasets).save_as(report, enforce_file_format=True)
    image = tmp_path / "ct.dcm"
    phantom_datasets[0].save_as(image, enforce_file_format=True)

    result = subprocess.run(
        [sys.executable, "-m", "fedgate", "findings", str(report), str(image)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )

    assert result.returncode == 1  # the CT image is no report
    (line,) = result.stdout.splitlines()
    read = Findings.parse(json.loads(line))
    assert [f.measurements[0].value for f in read.findings] == [12.3, 8.0]
    assert read.algorithm == findings.algorithm
    assert f"{image}: " in result.stderr and "not a structured report" in result.stderr
