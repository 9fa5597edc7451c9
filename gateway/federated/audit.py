"""The audit log: every federated question, its client, the answer as released, the budget spent.

An append-only file of JSON lines (one object per question, refused ones included), opened in
append mode and fsynced after each line by default, so an answer released is an answer recorded.
``fedgate audit`` reads it. It holds no identifier: cohorts are made of non-identifying filters
and answers of aggregates.

Who asked is recorded twice: ``client`` (the credential: the token, OIDC subject, or
``<hub>/<person>`` that presented the question) and ``person`` (whose budget it spent).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

AUDIT_FILE_NAME = "federated-audit.jsonl"


class AuditLog:
    def __init__(self, path: Path, fsync: bool = True):
        self.path = path
        self.fsync = fsync
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, **entry: Any) -> None:
        line = json.dumps(
            {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                **entry,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        with self._lock:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, (line + "\n").encode())
                if self.fsync:
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)


def read_audit_log(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of an audit log, oldest first (a torn last line is skipped)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
