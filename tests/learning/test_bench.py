"""Smoke test of ``bench.learning`` (issue 16): a small federation, two plans, traced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.learning.federation import _environment


def test_the_benchmark_measures_each_plan_beside_its_peer_and_breaks_a_round_down(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "trace.jsonl"
    command = [sys.executable, "-m", "bench.learning", "--patients", "120", "--rounds", "3"]
    command += ["--plan", "logistic_regression", "--plan", "sgd", "--local-epochs", "2"]
    command += ["--trace", str(trace)]
    done = subprocess.run(
        command, env=_environment(), capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert [result["plan"] for result in results] == ["logistic_regression", "sgd"]
    assert results[1]["model"]["local_epochs"] == 2
    for result in results:
        assert 0 < result["local_training_alone_seconds"] < result["wall_seconds"]
        share = (result["wall_seconds"] - result["local_training_alone_seconds"]) / result[
            "wall_seconds"
        ]
        assert abs(result["flower_share"] - share) < 0.01
        assert result["pooled_auc"] > 0.6
        breakdown = result["round_ms_median"]
        # Every training round was traced, at every step, for every site.
        assert breakdown["rounds traced"] == 3
        assert breakdown["a round, push to push"] > 0
        steps = [key for key in breakdown if key.startswith(("task:", "SuperNode", "executor"))]
        assert len(steps) == 9
    # The trace names steps, sites and message kinds only.
    assert '"site": "site1"' in trace.read_text()
