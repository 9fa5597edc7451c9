"""``fedgate doctor --config gateway.yaml``: check a deployment, one line per check.

Each line says ok, warning or problem and what to do (the checks: :mod:`gateway.doctor`, and
docs/operations.md). Exit status 0 when nothing is a problem (warnings are advice), else 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.doctor import diagnose, healthy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")


def run(args: argparse.Namespace) -> int:
    def progress(what: str) -> None:
        # Slow checks (network) announce themselves on stderr, so stdout stays the report.
        print(f"... {what}", file=sys.stderr, flush=True)

    findings = []
    for finding in diagnose(args.config, progress):
        findings.append(finding)
        print(finding.line(), flush=True)
    problems = sum(finding.status == "problem" for finding in findings)
    warnings = sum(finding.status == "warning" for finding in findings)
    print(
        f"{'healthy' if healthy(findings) else 'NOT healthy'}: "
        f"{problems} problem(s), {warnings} warning(s)"
    )
    return 0 if healthy(findings) else 1
