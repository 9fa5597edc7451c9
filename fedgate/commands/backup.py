"""``fedgate backup --config gateway.yaml --out FILE.tar[.gz]``: the gateway's state in one file.

``data_dir`` (SQLite databases by their online backup API, the store's files, the index salt)
and, with PostgreSQL, a ``pg_dump`` of the queue and index databases; see
:mod:`gateway.backup` and docs/operations.md. Safe while the gateway runs. Exit status 0 on
success, 1 when the backup could not be made, 2 on a bad configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.backup import BackupError, backup
from gateway.settings import ConfigError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")
    parser.add_argument(
        "--out", type=Path, required=True, help="the archive to write (.tar, or .tar.gz)"
    )


def progress(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"fedgate backup: {error}", file=sys.stderr)
        return 2
    try:
        report = backup(settings, args.out, progress)
    except (BackupError, OSError) as error:
        print(f"fedgate backup: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {report.archive} ({report.bytes} bytes): {report.files} file(s), "
        f"database(s): {', '.join(report.databases) or 'none'}"
    )
    return 0
