"""Federated learning benchmark (issue 16): ``--rounds`` rounds over ``--sites`` sites of
``--patients`` phantom patients each, on Flower over loopback, against local training alone.

1. Each site's findings index is filled with phantom patients (``fedgate.phantom_cohort``,
   straight into the index), a real ``flower-superlink`` and one ``fedgate learn site`` (a real
   ``flower-supernode`` with fedgate's ClientApp) per site are started and connected: not timed.
2. ``fedgate learn run`` of a logistic-regression plan (one full-batch step per round) over all
   sites: the wall time from the command's start to its exit (FAB submitted, ServerApp started,
   standardisation, the rounds, evaluation, ONNX export, report), and the time between rounds.
3. Local training alone: the same computation in one process without Flower (each site's table
   built from its index, the standardisation sums, the rounds of local steps with FedAvg, the
   evaluation). Flower's share is ``(wall - local) / wall``: processes, messages, the SuperLink.

Targets: under 60 s for 20 rounds over three sites of 2,000 patients, Flower's share under 50 %.

Run: ``python -m bench.learning`` (``--patients 500 --rounds 5`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gateway.learning.evaluation import site_evaluation
from gateway.learning.models import initial_parameters, predict_proba, train_locally
from gateway.learning.plan import parse_plan
from tests.learning.cohorts import PLAN
from tests.learning.federation import Federation, start_federation


def local_training_alone(federation: Federation, plan_text: str) -> float:
    """Seconds for the same computation in one process, without Flower."""
    plan = parse_plan(plan_text.encode()).plan
    started = time.perf_counter()
    tables = [site.table(plan_text) for site in federation.sites]
    rows = sum(table.n_train for table in tables)
    mean = sum(table.x_train.sum(axis=0) for table in tables) / rows
    squares = sum((table.x_train**2).sum(axis=0) for table in tables) / rows
    scale = np.sqrt(squares - mean**2)
    parameters = initial_parameters(plan.model, len(plan.features))
    for _ in range(plan.rounds):
        updates = [
            train_locally(plan.model, parameters, (t.x_train - mean) / scale, t.y_train)
            for t in tables
        ]
        parameters = [
            sum(u[i] * t.n_train / rows for u, t in zip(updates, tables, strict=True))
            for i in range(len(parameters))
        ]
    for table in tables:
        scores = predict_proba(plan.model, parameters, (table.x_test - mean) / scale)
        site_evaluation(table.y_test, scores, plan.evaluation)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    plan_text = (
        PLAN.replace(
            "model: {family: logistic_regression}",
            "model: {family: logistic_regression, learning_rate: 0.8}",
        )
        + f"rounds: {args.rounds}\nmin_sites: {args.sites}\n"
    )
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-learning-") as folder:
        print(f"{args.sites} sites of {args.patients} patients: filling, starting", file=sys.stderr)
        federation = start_federation(Path(folder), args.patients, args.sites, record=False)
        try:
            for site in federation.sites:
                site.approve(plan_text)
            result = federation.run(plan_text)
        finally:
            federation.stop()
        for seconds, line in result.timeline:
            print(f"{seconds:7.2f} s  {line}", file=sys.stderr)
        if result.report.get("status") != "completed":
            print(f"run failed: {result.report or result.progress}", file=sys.stderr)
            return 1
        local = local_training_alone(federation, plan_text)
    rounds = [seconds for seconds, line in result.timeline if line.startswith("[round]")]
    first_round = next(s for s, line in result.timeline if line.startswith("[round] round 1,"))
    print(
        json.dumps(
            {
                "sites": args.sites,
                "patients_per_site": args.patients,
                "rounds": args.rounds,
                "training_rows": result.report["training_rows"],
                "wall_seconds": round(result.seconds, 2),
                "until_round_1_seconds": round(first_round, 2),
                "seconds_per_round_median": round(float(np.median(np.diff(rounds))), 2)
                if len(rounds) > 1
                else None,
                "local_training_alone_seconds": round(local, 3),
                "flower_share": round((result.seconds - local) / result.seconds, 3),
                "pooled_auc": result.report["evaluation"]["pooled"]["auc"],
                "load_average_1min": round(os.getloadavg()[0], 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
