"""Federated learning benchmark (issue 16): ``--rounds`` rounds over ``--sites`` sites of
``--patients`` phantom patients each, on Flower over loopback, against local training alone.

1. Each site's findings index is filled with phantom patients (``fedgate.phantom_cohort``,
   straight into the index), a real ``flower-superlink`` and one ``fedgate learn site`` (a real
   ``flower-supernode`` with fedgate's ClientApp) per site are started and connected: not timed.
2. For each ``--plan`` (the model families as the tests run them, ``tests.learning.cohorts``:
   by default logistic regression, one full-batch step per round; ``sgd`` and ``mlp`` take
   ``--local-epochs``), ``fedgate learn run`` over all sites: the wall time from the command's
   start to its exit (FAB submitted, ServerApp started, standardisation, the rounds,
   evaluation, ONNX export, report), and the time between rounds.
3. Its peer, right after it: local training alone, the same computation in one process without
   Flower (each site's table built from its index, the standardisation sums, the rounds of the
   plan's local training with FedAvg, the evaluation). Flower's share is
   ``(wall - local) / wall``: processes, messages, the SuperLink.

With ``--trace``, every process of the federation marks each step of a message
(:mod:`gateway.learning.trace`) and the result holds, per plan, where a training round's time
goes: the median over rounds and sites of each gap between consecutive steps.

Targets: under 60 s for 20 rounds over three sites of 2,000 patients, Flower's share under 50 %.

Run: ``python -m bench.learning`` (``--patients 500 --rounds 5`` for a quick run;
``--plan logistic_regression --plan mlp --local-epochs 50 --trace trace.jsonl`` for both
plans).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from gateway.learning.evaluation import site_evaluation
from gateway.learning.models import initial_parameters, predict_proba, train_locally
from gateway.learning.plan import parse_plan
from gateway.learning.trace import TRACE_ENV, read_trace
from tests.learning.cohorts import MODELS, plan_text
from tests.learning.federation import Federation, start_federation

#: The steps of one message, in the order they end (gateway.learning.trace), and what the time
#: before each one is spent on. The SuperNode stores a message, which the executor may acquire
#: at once, before it has pulled the message's content: the task waits for that.
STEPS = (
    ("hub.pushed", "hub: push to the SuperLink"),
    ("executor.acquired", "SuperNode hears of it (poll); executor acquires the task (poll)"),
    ("task.forked", "executor: fork"),
    ("node.pulled", "SuperNode: pulls the message's content from the SuperLink"),
    ("task.start", "task: pulls its input from the SuperNode, loads the ClientApp"),
    ("task.approved", "task: settings, plan, approval"),
    ("task.table", "task: the site's table"),
    ("task.end", "task: local training"),
    ("task.exit", "task: pushes the reply to its SuperNode"),
    ("node.sent", "SuperNode: notices the reply (poll), sends it to the SuperLink"),
)


def local_training_alone(federation: Federation, plan_text: str) -> float:
    """Seconds for the same computation in one process, without Flower."""
    plan = parse_plan(plan_text.encode()).plan
    started = time.perf_counter()
    tables = [site.table(plan_text) for site in federation.sites]
    rows = sum(table.n_train for table in tables)
    mean = sum(table.x_train.sum(axis=0) for table in tables) / rows
    squares = sum((table.x_train**2).sum(axis=0) for table in tables) / rows
    scale = np.sqrt(squares - mean**2)
    parameters = initial_parameters(plan.model, len(plan.features), plan.evaluation.seed)
    for server_round in range(1, plan.rounds + 1):
        # As the ClientApp trains (gateway.learning.client): the round's seed.
        updates = [
            train_locally(
                plan.model,
                parameters,
                (t.x_train - mean) / scale,
                t.y_train,
                seed=plan.evaluation.seed + server_round,
            )
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


def model_of(family: str, local_epochs: int | None) -> str:
    """The plan's ``model:`` for ``family`` as the tests run it, with ``local_epochs`` if the
    family has local epochs (logistic regression keeps its one full-batch step per round)."""
    model = MODELS[family]
    if local_epochs is None or "local_epochs" not in model:
        return model
    return re.sub(r"local_epochs: \d+", f"local_epochs: {local_epochs}", model)


def round_breakdown(steps: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Where the training rounds between ``start`` and ``end`` (wall clock) spent their time:
    per step, the median over rounds and sites of the gap before it (ms), and the hub's part."""
    steps = [s for s in steps if start <= s["t"] <= end]
    # Which site each process belongs to: a task names it; its parent is the site's executor,
    # whose parent (``fedgate learn site``) is also the SuperNode's.
    site_of: dict[int, str] = {}
    for step in steps:
        if step["step"] == "task.start" and step.get("site"):
            site_of[step["pid"]] = site_of[step["ppid"]] = step["site"]
    launcher_of = {s["ppid"]: site_of[s["pid"]] for s in steps if s["pid"] in site_of}
    for step in steps:
        if step["pid"] not in site_of and step["ppid"] in launcher_of:
            site_of[step["pid"]] = launcher_of[step["ppid"]]
    pushes = [s for s in steps if s["step"] == "hub.push" and s.get("kinds") == ["train"]]
    gaps: dict[str, list[float]] = defaultdict(list)
    for number, push in enumerate(pushes):
        until = pushes[number + 1]["t"] if number + 1 < len(pushes) else end
        window = [s for s in steps if push["t"] <= s["t"] < until]
        received = [
            s["t"] for s in window if s["pid"] == push["pid"] and s["step"] == "hub.received"
        ]
        sent = []
        for site in sorted(set(site_of.values())):
            previous = push["t"]
            for name, _ in STEPS:
                step = next(
                    (
                        s
                        for s in window
                        if s["step"] == name
                        and (
                            s["pid"] == push["pid"]
                            if name.startswith("hub.")
                            else site_of.get(s["pid"]) == site
                        )
                    ),
                    None,
                )
                if step is None:
                    break
                # On the way to the reply: a step that ended before the one listed before it
                # (the content pulled before the fork) cost the round nothing more.
                gaps[name].append(max(0.0, step["t"] - previous))
                previous = max(previous, step["t"])
            else:
                sent.append(previous)
        if received and sent:
            gaps["hub.received"].append(max(received) - max(sent))
        if number + 1 < len(pushes) and received:
            gaps["hub.next"].append(until - max(received))
        if number + 1 < len(pushes):
            gaps["round"].append(until - push["t"])
    labels = dict(STEPS)
    labels["hub.received"] = "hub: the last site's reply, sent to pulled (poll)"
    labels["hub.next"] = "hub: aggregation to the next round's push"
    labels["round"] = "a round, push to push"
    return {
        labels[name]: round(1000 * float(np.median(values)), 1)
        for name, values in gaps.items()
        if values
    } | {"rounds traced": len(pushes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--plan",
        action="append",
        choices=sorted(MODELS),
        help="a model family as the tests run it (repeat for several; default logistic_regression)",
    )
    parser.add_argument(
        "--local-epochs",
        type=int,
        default=None,
        help="the sgd and mlp plans' local epochs (logistic regression: one step per round)",
    )
    parser.add_argument(
        "--superlink-state",
        choices=["memory", "file"],
        default=None,
        help="where the SuperLink keeps its state (hub.yaml's learning.superlink_state)",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        default=None,
        metavar="FILE",
        help="break a training round down by step; the processes' steps are kept in FILE",
    )
    args = parser.parse_args()
    plans = {
        family: plan_text(model_of(family, args.local_epochs), args.rounds, args.sites)
        for family in args.plan or ["logistic_regression"]
    }
    results = []
    # Flower's clients print to stdout ("Using SuperLink: ..."): the result alone goes there.
    with (
        contextlib.redirect_stdout(sys.stderr),
        tempfile.TemporaryDirectory(prefix="fedgate-bench-learning-") as folder,
    ):
        if args.trace:
            args.trace.unlink(missing_ok=True)
            # Inherited by every process of the federation (SuperLink, ServerApp, sites).
            os.environ[TRACE_ENV] = str(args.trace.resolve())
        print(f"{args.sites} sites of {args.patients} patients: filling, starting", file=sys.stderr)
        learning = {"superlink_state": args.superlink_state} if args.superlink_state else {}
        federation = start_federation(
            Path(folder), args.patients, args.sites, record=False, learning=learning
        )
        try:
            for family, text in plans.items():
                for site in federation.sites:
                    site.approve(text)
                started = time.time()
                result = federation.run(text)
                ended = time.time()
                for seconds, line in result.timeline:
                    print(f"{seconds:7.2f} s  {line}", file=sys.stderr)
                if result.report.get("status") != "completed":
                    print(f"run failed: {result.report or result.progress}", file=sys.stderr)
                    return 1
                local = local_training_alone(federation, text)
                rounds = [s for s, line in result.timeline if line.startswith("[round]")]
                first = next(s for s, line in result.timeline if line.startswith("[round] round 1"))
                figures: dict[str, Any] = {
                    "plan": family,
                    "model": parse_plan(text.encode()).plan.model.model_dump(),
                    "sites": args.sites,
                    "patients_per_site": args.patients,
                    "rounds": args.rounds,
                    "training_rows": result.report["training_rows"],
                    "wall_seconds": round(result.seconds, 2),
                    "until_round_1_seconds": round(first, 2),
                    "seconds_per_round_median": round(float(np.median(np.diff(rounds))), 2)
                    if len(rounds) > 1
                    else None,
                    "local_training_alone_seconds": round(local, 3),
                    "flower_share": round((result.seconds - local) / result.seconds, 3),
                    "pooled_auc": result.report["evaluation"]["pooled"]["auc"],
                    "superlink_state": args.superlink_state or "memory",
                    "load_average_1min": round(os.getloadavg()[0], 1),
                }
                if args.trace:
                    steps = read_trace(args.trace)
                    figures["round_ms_median"] = round_breakdown(steps, started, ended)
                results.append(figures)
        finally:
            federation.stop()
    print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
