"""Starting and stopping the real server processes the tests run against."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def run_fedgate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m fedgate ARGS`` from this checkout, as a user runs it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "fedgate", *args],
        cwd=_REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(_REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(command: list[str], log_path: Path, **options: object) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group, stdout and stderr appended to ``log_path``."""
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **options
    )


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM the process group, SIGKILL it if it has not ended within ``timeout``."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """``kill -9`` of the process group: no chance to clean up, as in a crash."""
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
