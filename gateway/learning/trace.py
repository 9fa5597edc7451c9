"""Timestamps of a federated round's steps, across the processes that take them (issue 16).

A round passes through several processes: the hub's ServerApp pushes a message to the
SuperLink, each site's SuperNode pulls it, the site's executor acquires the task and forks a
child, the child runs fedgate's ClientApp and pushes the reply to its SuperNode, the SuperNode
sends it to the SuperLink, and the ServerApp pulls it. Where a round's time goes is the gaps
between those steps. When the environment variable :data:`TRACE_ENV` names a file, each of
these processes appends one JSON line per step to it (the wall clock, shared by the processes
of one machine, with the process and its parent, which tie a task to its site's executor and
SuperNode); ``bench.learning --trace`` reads them back into a breakdown per step.

Unset (the default), :func:`mark` does nothing but read the environment: no file, no cost. The
lines hold step names, round numbers, message types and site names only: no row, no value.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = ["TRACE_ENV", "mark", "read_trace"]

#: The environment variable naming the trace file (JSON lines, appended by every process).
TRACE_ENV = "FEDGATE_LEARNING_TRACE"


def mark(step: str, **fields: Any) -> None:
    """Append ``step`` with the time now to the trace file, if tracing is on."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    line = {"t": time.time(), "step": step, "pid": os.getpid(), "ppid": os.getppid(), **fields}
    # One write(2) of one line with O_APPEND: lines of concurrent processes never interleave.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, (json.dumps(line) + "\n").encode())
    finally:
        os.close(descriptor)


def read_trace(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The trace's lines, in time order."""
    with open(path, encoding="utf-8") as lines:
        steps = [json.loads(line) for line in lines if line.strip()]
    return sorted(steps, key=lambda step: float(step["t"]))
