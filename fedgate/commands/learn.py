"""``fedgate learn``: federated learning on Flower (docs/learning.md).

- ``fedgate learn validate PLAN.yaml`` checks a training plan and prints its sha256, the
  identity a site's admin approves.
- ``fedgate learn approve --config gateway.yaml SHA256`` approves a plan at this site
  (``refuse``, ``revoke``; ``approvals`` lists every decision taken).
- ``fedgate learn site --config gateway.yaml --superlink HOST:PORT`` runs the site's SuperNode.
- ``fedgate learn run --hub-config hub.yaml PLAN.yaml --out DIR`` runs the hub's side.

Each action has its own ``_add_<action>`` and ``_<action>`` function.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from gateway.approvals import Approvals, DecisionName, SubjectError
from gateway.learning.plan import PlanError, load_plan
from gateway.settings import ConfigError, load_settings

#: What a site decides on for federated learning (gateway.approvals).
PLAN_KIND = "training-plan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_validate(actions)
    _add_decisions(actions)


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


def _add_decisions(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    helps = {
        "approve": "approve a plan (by its sha256) at this site: its SuperNode may run it",
        "refuse": "refuse a plan at this site (recorded; the SuperNode keeps refusing it)",
        "revoke": "withdraw an earlier approval: runs of the plan are refused from now on",
    }
    for action, help_text in helps.items():
        decide = actions.add_parser(action, help=help_text, description=help_text)
        decide.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")
        decide.add_argument("sha256", help="the plan's sha256 ('fedgate learn validate' prints it)")
        decide.add_argument("--by", default=None, help="who decides (default: the login name)")
        decide.add_argument("--note", default="", help="why, for the record")
    listing = actions.add_parser("approvals", help="list this site's decisions on plans")
    listing.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")


def _open_approvals(config: Path, action: str) -> Approvals | None:
    try:
        settings = load_settings(config)
    except ConfigError as error:
        print(f"fedgate learn {action}: {error}", file=sys.stderr)
        return None
    return Approvals.open(settings.index, settings.data_dir)


def _decide(args: argparse.Namespace) -> int:
    decisions: dict[str, DecisionName] = {
        "approve": "approved",
        "refuse": "refused",
        "revoke": "revoked",
    }
    approvals = _open_approvals(args.config, args.action)
    if approvals is None:
        return 2
    try:
        made = approvals.decide(
            PLAN_KIND,
            args.sha256,
            decisions[args.action],
            by=args.by or getpass.getuser(),
            note=args.note,
        )
    except SubjectError as error:
        print(f"fedgate learn {args.action}: {error}", file=sys.stderr)
        return 2
    finally:
        approvals.close()
    print(f"plan {made.sha256} {made.decision} by {made.decided_by} at {made.decided_at}")
    return 0


def _list_decisions(args: argparse.Namespace) -> int:
    approvals = _open_approvals(args.config, args.action)
    if approvals is None:
        return 2
    try:
        for made in approvals.history(PLAN_KIND):
            note = f"  ({made.note})" if made.note else ""
            print(f"{made.decided_at}  {made.decision:<8}  {made.sha256}  {made.decided_by}{note}")
    finally:
        approvals.close()
    return 0


ACTIONS = {
    "validate": _validate,
    "approve": _decide,
    "refuse": _decide,
    "revoke": _decide,
    "approvals": _list_decisions,
}
