"""The federated benchmark runs, on SQLite and on PostgreSQL, at a small scale (issue 19).

``python -m bench.federated`` as a user runs it, in a process of its own: every query of the
table is timed, the index kept in ``--index-dir`` is reused by the next run, and the PostgreSQL
variant works against a real server. The figures themselves are docs/benchmarks.md's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
QUERIES = (
    "count (patients)",
    "histogram (age, 10 bins)",
    "cross-tab (sex x age, 10 bins)",
    "cross-tab (study year x nodule diameter, studies)",
)


def _bench(*arguments: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.federated",
            "--studies",
            "2000",
            "--findings",
            "20000",
            "--repeats",
            "3",
            "--ledger",
            "50",
            "--no-hub",
            *arguments,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _p50(output: str, row: str) -> float:
    found = re.search(rf"^\| {re.escape(row)} \| ([0-9.]+) \| ([0-9.]+) \|", output, re.M)
    assert found, f"no row {row!r} in:\n{output}"
    return float(found.group(1))


def _cohort(output: str) -> int:
    found = re.search(r"nodule of 8 mm or more\): ([0-9,]+) patients", output)
    assert found, output
    return int(found.group(1).replace(",", ""))


def _check_table(output: str) -> None:
    for query in QUERIES:
        for role in ("noisy", "exact role (suppression, no noise)"):
            assert _p50(output, f"{query}, {role}") > 0
    assert _p50(output, "bare SQL count (peer: no disclosure control)") > 0


@pytest.mark.slow
def test_the_benchmark_times_every_query_and_reuses_its_index(tmp_path: Path) -> None:
    first = _bench("--index-dir", str(tmp_path / "index"))
    assert "2,000 studies, 20,000 findings, generated in" in first
    _check_table(first)
    second = _bench("--index-dir", str(tmp_path / "index"))
    assert "20,000 findings, reused." in second
    _check_table(second)
    # The same rows, so the same cohort (a generated index is the seed's, always).
    assert 0 < _cohort(first) == _cohort(second) < 2000


@pytest.mark.slow
def test_the_benchmark_on_postgresql(tmp_path: Path) -> None:
    cluster = PostgresServer(database="postgres").start()
    try:
        output = _bench("--index-url", cluster.url, "--index-dir", str(tmp_path / "salt"))
        assert "Index (PostgreSQL)" in output
        _check_table(output)
        sqlite = _bench("--index-dir", str(tmp_path / "sqlite"))
        assert _cohort(output) == _cohort(sqlite)
    finally:
        cluster.stop()
