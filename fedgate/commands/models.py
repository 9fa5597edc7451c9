"""``fedgate models build --out DIR``: write the bundled models into a model repository."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from inference_service.manifest import MODEL_FILE_NAME
from inference_service.models.build import build_repository


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build", help="build nodule-detector and nodule-presence (reproducible, no download)"
    )
    build.add_argument("--out", type=Path, required=True, help="model repository folder")


def run(args: argparse.Namespace) -> int:
    if args.action == "build":
        for name, folder in build_repository(args.out).items():
            digest = hashlib.sha256((folder / MODEL_FILE_NAME).read_bytes()).hexdigest()
            print(f"{name}: {folder / MODEL_FILE_NAME} sha256={digest[:16]}")
    return 0
