"""``fedgate audit``: show the federated audit log (who asked what, what was released).

Reads ``<data_dir>/federated-audit.jsonl`` (or ``federated.audit_log``) of the gateway whose
config is given, or a log file given directly with ``--log``. ``--json`` prints the raw lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.federated.audit import AUDIT_FILE_NAME, read_audit_log
from gateway.settings import ConfigError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the gateway's YAML file")
    parser.add_argument("--log", type=Path, help="an audit log file (instead of --config)")
    parser.add_argument("--client", help="only the questions of this credential")
    parser.add_argument("--person", help="only the questions charged to this person")
    parser.add_argument("--status", choices=["answered", "refused", "invalid"])
    parser.add_argument("--last", type=int, default=0, help="only the last N entries")
    parser.add_argument("--json", action="store_true", help="print the JSON lines as they are")


def _released(entry: dict[str, Any]) -> str:
    if entry.get("status") != "answered":
        return str(entry.get("reason", ""))[:80]
    answer = entry.get("answer") or {}
    if answer.get("kind") == "count":
        if answer.get("suppressed"):
            return "suppressed"
        interval = answer.get("interval")
        noisy = f" [{interval[0]}, {interval[1]}]" if interval else ""
        return f"count={answer.get('count')}{noisy}"
    if "vocabulary" in answer:
        return f"{sum(len(values) for values in answer['vocabulary'].values())} values listed"
    if "cells" in answer:
        hidden = sum(1 for c in answer["cells"] if c.get("suppressed"))
        return f"{len(answer['cells'])} cells, {hidden} suppressed"
    return f"n={answer.get('n')}"


def run(args: argparse.Namespace) -> int:
    path = args.log
    if path is None:
        try:
            settings = load_settings(args.config)
        except ConfigError as error:
            print(f"fedgate audit: {error}", file=sys.stderr)
            return 2
        path = settings.federated.audit_log or settings.data_dir / AUDIT_FILE_NAME
    entries = [
        e
        for e in read_audit_log(path)
        if (args.client is None or e.get("client") == args.client)
        and (args.person is None or e.get("person") == args.person)
        and (args.status is None or e.get("status") == args.status)
    ]
    if args.last:
        entries = entries[-args.last :]
    for entry in entries:
        if args.json:
            print(json.dumps(entry, sort_keys=True))
            continue
        request = entry.get("request") or {}
        kind = (request.get("aggregate") or {}).get("kind", "?")
        print(
            f"{entry.get('time', '?'):<29} {entry.get('client', '?'):<16} "
            f"{entry.get('person', '-'):<12} {entry.get('mode', '-'):<5} "
            f"{'/' + str(entry['endpoint']) if entry.get('endpoint') else '?':<10} "
            f"{entry.get('status', '?'):<9} {kind:<10} eps={entry.get('epsilon_spent', 0):<5g} "
            f"{_released(entry)}"
        )
    if not entries:
        print(f"no entries in {path}", file=sys.stderr)
    return 0
