"""``fedgate learn``: federated learning on Flower (docs/learning.md).

- ``fedgate learn validate PLAN.yaml`` checks a training plan and prints its sha256, the
  identity a site's admin approves.
- ``fedgate learn approve --config gateway.yaml SHA256`` approves a plan at this site.
- ``fedgate learn site --config gateway.yaml --superlink HOST:PORT`` runs the site's SuperNode.
- ``fedgate learn run --hub-config hub.yaml PLAN.yaml --out DIR`` runs the hub's side.

Each action has its own ``_add_<action>`` and ``_<action>`` function.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.learning.plan import PlanError, load_plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_validate(actions)


def run(args: argparse.Namespace) -> int:
    action: int = ACTIONS[args.action](args)
    return action


def _add_validate(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = actions.add_parser(
        "validate", help="check a training plan and print its sha256 (what sites approve)"
    )
    validate.add_argument("plan", type=Path, help="the plan's YAML file")


def _validate(args: argparse.Namespace) -> int:
    try:
        loaded = load_plan(args.plan)
    except PlanError as error:
        print(f"fedgate learn validate: {args.plan}: {error}", file=sys.stderr)
        return 2
    plan = loaded.plan
    print(loaded.sha256)
    print(
        f"plan {plan.name!r}: {len(plan.features)} features ({', '.join(plan.feature_names)}), "
        f"model {plan.model.family}, {plan.rounds} rounds, at least {plan.min_sites} sites, "
        f"one row per {plan.unit}",
        file=sys.stderr,
    )
    return 0


ACTIONS = {"validate": _validate}
