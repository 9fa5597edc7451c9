"""``fedgate store check [--repair] --config gateway.yaml``: the embedded stores vs their catalogs.

Checks ``data_dir/store`` and, where analyses ran, the research store ``data_dir/research``.

Reports what a crash left (files never acknowledged: published without a catalog row, and
temporary files) and acknowledged instances whose file is missing. ``--repair`` removes the
leftovers, as the gateway does at every start; it needs the store to itself, so it refuses
while a gateway has it open. Exit status: 0 consistent (after the repair, if asked), 1
problems remain, 2 bad configuration or the store is in use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.settings import ConfigError, load_settings
from gateway.store.catalog import Catalog
from gateway.store.check import StoreInUse, check, exclusive, remove_leftovers
from gateway.store.files import FileLayout

_SHOWN = 20  # paths listed per kind of problem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check_parser = actions.add_parser(
        "check", help="compare the store's files with its catalog (crash leftovers, lost files)"
    )
    check_parser.add_argument("--config", type=Path, help="the gateway's YAML file")
    check_parser.add_argument(
        "--repair",
        action="store_true",
        help="remove files never acknowledged (the gateway must be stopped)",
    )


#: The embedded stores under ``data_dir``: the clinical one, and the research store that
#: holds the results of models the site has not validated (docs/analysis.md).
STORES = (("store", "the store"), ("research", "the research store"))


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"fedgate store: {error}", file=sys.stderr)
        return 2
    roots = [
        (settings.data_dir / folder, name)
        for folder, name in STORES
        if (settings.data_dir / folder / "catalog.sqlite").exists()
    ]
    if not roots:
        print(f"fedgate store: no store at {settings.data_dir / 'store'}", file=sys.stderr)
        return 2
    status = 0
    for root, name in roots:
        print(f"{name} ({root}):")
        if not args.repair:
            status = max(status, _check(root, repair=False))
            continue
        try:
            with exclusive(root):
                status = max(status, _check(root, repair=True))
        except StoreInUse as error:
            print(f"fedgate store: {error}; stop it first (it reclaims at start)", file=sys.stderr)
            return 2
    return status


def _check(root: Path, repair: bool) -> int:
    layout = FileLayout(root)
    catalog = Catalog.open(root / "catalog.sqlite")
    try:
        report = check(layout, catalog)
    finally:
        catalog.close()
    _list("file(s) never acknowledged (no catalog row)", report.orphans)
    _list("temporary file(s)", report.temporaries)
    _list("acknowledged instance(s) whose file is missing", report.missing)
    if repair and report.leftovers:
        removed = remove_leftovers(layout, report)
        print(f"removed {removed} file(s) never acknowledged")
        report.orphans, report.temporaries = [], []
    if report.missing:
        print("missing files cannot be repaired: send those instances again")
    if report.consistent:
        print("store consistent with its catalog")
        return 0
    return 1


def _list(what: str, items: list[Path] | list[str]) -> None:
    if not items:
        return
    print(f"{len(items)} {what}:")
    for item in items[:_SHOWN]:
        print(f"  {item}")
    if len(items) > _SHOWN:
        print(f"  ... and {len(items) - _SHOWN} more")
