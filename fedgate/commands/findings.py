"""``fedgate findings``: print the findings of TID 1500 SR files as JSON (one line per file).

What ``sr_writer.read_findings`` sees in a report, ours or a third party's: handy to check what
a model wrote, or what the findings index will count from an SR a radiologist made in OHIF.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from sr_writer import read_findings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", type=Path, nargs="+", help="DICOM SR files (Part 10)")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON")


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every file was read, 1 when any was not a readable TID 1500 SR."""
    status = 0
    for path in args.files:
        try:
            dataset = pydicom.dcmread(path)
            findings = read_findings(dataset)
        except (OSError, InvalidDicomError, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            status = 1
            continue
        print(findings.model_dump_json(indent=args.indent), flush=True)
    return status
