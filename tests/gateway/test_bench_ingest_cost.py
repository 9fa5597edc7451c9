"""The ingest-cost benchmark (issue 19, item 3) at a small scale, and the CPU it reads.

``python -m bench.ingest_cost`` as a user runs it: a gateway and an Orthanc, each fed by a
dicomweb-client sender in a process of its own; the figures themselves are
docs/benchmarks.md's. The CPU accounting is checked against a process tree whose work is
known.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ingest_cost import process_tree_cpu_seconds

ROOT = Path(__file__).resolve().parents[2]

_BURN = """
import subprocess, sys, time
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child"])
    print(child.pid, flush=True)
    child.wait()
else:
    sys.stdin.readline()  # the test's "go": the CPU of starting up is not counted
    deadline = time.process_time() + 0.6
    while time.process_time() < deadline:
        pass
    print("burnt", flush=True)
    time.sleep(30)
"""


def test_the_cpu_of_a_server_counts_its_child_processes() -> None:
    """A parent that only waits, and a child that burns 0.6 s of CPU then sleeps: the tree's
    CPU grows by the child's 0.6 s, which the parent's own /proc/PID/stat would not show."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _BURN, "parent", _BURN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        assert parent.stdin is not None and parent.stdout is not None
        child = int(parent.stdout.readline())
        before = process_tree_cpu_seconds(parent.pid)
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "burnt"
        after = process_tree_cpu_seconds(parent.pid)
        assert 0.55 <= after - before <= 0.9, (before, after)
        own = Path(f"/proc/{parent.pid}/stat").read_text()
        fields = own[own.rindex(")") + 2 :].split()
        own_seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        assert own_seconds < 0.3
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()


@pytest.mark.slow
@pytest.mark.orthanc
def test_the_benchmark_measures_both_servers_with_a_python_sender() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.ingest_cost", "--instances", "6", "--rounds", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    # The sender checks that every instance is in the answer's ReferencedSOPSequence and the
    # benchmark fails otherwise: a zero exit means both servers stored all six.
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {}
    for name in ("fedgate gateway", "Orthanc 1.10 \\+ DICOMweb \\(defaults\\)"):
        found = re.search(rf"^\| {name} \|(.*)\|$", result.stdout, re.M)
        assert found, result.stdout
        rows[name] = [float(cell) for cell in found.group(1).split("|")]
    for rate, megabytes, server_cpu, sender_cpu, encoding, transfer in rows.values():
        assert rate > 0 and megabytes > 0
        # Six 0.5 MB instances cost a server some CPU, but not a minute per GB.
        assert 0 < server_cpu < 60
        assert 0 < sender_cpu < 60
        assert encoding > 0 and transfer > 0
    assert re.search(r"^rate gateway / Orthanc: [0-9.]+x", result.stdout, re.M)
    assert re.search(r"^CPU per GB gateway / Orthanc: [0-9.]+", result.stdout, re.M)
