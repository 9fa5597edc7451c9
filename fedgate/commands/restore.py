"""``fedgate restore --config gateway.yaml [--force] FILE.tar``: put a backup back in place.

Checks the archive's manifest (format version, SHA-256 of every member) before anything is
changed; refuses a non-empty data_dir (or a PostgreSQL database holding fedgate's tables)
unless ``--force``, which moves the present data_dir aside. Stop the gateway first. Exit status
0 on success, 1 when nothing was restored, 2 on a bad configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedgate.commands.backup import progress
from gateway.backup import BackupError, restore
from gateway.settings import ConfigError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")
    parser.add_argument(
        "--force",
        action="store_true",
        help="restore over a non-empty data_dir (moved aside) or database (replaced)",
    )
    parser.add_argument("archive", type=Path, help="a backup written by fedgate backup")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"fedgate restore: {error}", file=sys.stderr)
        return 2
    try:
        report = restore(settings, args.archive, force=args.force, progress=progress)
    except (BackupError, OSError) as error:
        print(f"fedgate restore: {error}", file=sys.stderr)
        return 1
    if report.moved_aside is not None:
        print(f"the previous data_dir is kept at {report.moved_aside}")
    print(
        f"restored the backup of {report.created_at} into {settings.data_dir}: "
        f"{report.files} file(s), database(s): {', '.join(report.databases) or 'none'}"
    )
    return 0
