"""``fedgate analysis``: federated analyses (docs/analysis.md).

At the hub (``--hub-config hub.yaml``):

- ``submit --model DIR --cohort cohort.json``: send the model bundle in DIR (model.yaml +
  model.onnx) and the cohort to every site; prints the analysis id and each site's state.
- ``status ID``: each site's state and counts, and what the model found over the cohort
  (aggregates through the sites' privacy layer; ``--person``, ``--exact`` as for questions).

At a site (``--config gateway.yaml``):

- ``list`` the analyses received, with progress;
- ``approve ID`` / ``refuse ID`` (recorded in the site's approvals, with ``--by``, ``--note``);
- ``pause|resume|cancel ID`` stop new research jobs of an analysis, let them start again, or
  drop its jobs that have not started (running ones finish);
- ``validate-model NAME`` marks an installed model (the name ``list`` shows) validated: its
  later results go to the clinical PACS instead of the research store (``--revoke`` sends
  them back to the research store).

Each action has its own ``_add_<action>`` and ``_<action>`` function, registered in ACTIONS.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import ValidationError

from gateway.analysis.approval import approve, refuse
from gateway.analysis.bundle import BundleError, ModelBundle
from gateway.analysis.records import AnalysisState
from gateway.analysis.store import AnalysisStore
from gateway.approvals import Approvals
from gateway.auth import Principal, Role
from gateway.federated.cohort import Cohort
from gateway.settings import load_settings
from observability import configure_logging
from serviceconfig import ConfigError, describe_validation_error

Actions: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


#: What each of pause, resume and cancel asks of an analysis's state.
_STATE_OF: dict[str, AnalysisState] = {
    "pause": "paused",
    "resume": "running",
    "cancel": "cancelled",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for add in (
        _add_submit,
        _add_status,
        _add_list,
        _add_decisions,
        _add_state_changes,
        _add_validate_model,
    ):
        add(actions)


def run(args: argparse.Namespace) -> int:
    # Output is for people (and --json for programs): log lines only for what went wrong, on
    # stderr; each site's failure is in the output already.
    configure_logging("warning", json_output=False)
    result: int = ACTIONS[args.action](args)
    return result


def _fail(action: str, message: str, status: int = 2) -> int:
    print(f"fedgate analysis {action}: {message}", file=sys.stderr)
    return status


# -- at the hub --------------------------------------------------------------------------------


def _add_submit(actions: Actions) -> None:
    submit = actions.add_parser("submit", help="send a model and a cohort to every site")
    submit.add_argument("--hub-config", type=Path, required=True, help="the hub's YAML file")
    submit.add_argument("--model", type=Path, required=True, help="folder: model.yaml, model.onnx")
    submit.add_argument("--cohort", type=Path, required=True, help="the cohort (JSON)")
    submit.add_argument("--person", default=None, help="who sends it (default: login name)")


def _hub(args: argparse.Namespace) -> Any:
    from hub.app import Hub, HubSettings

    try:
        settings = HubSettings.load(args.hub_config)
        return Hub(settings)
    except ConfigError as error:
        return _fail(args.action, str(error))
    except (OSError, ValueError) as error:  # its signing key or audit log cannot be used
        return _fail(args.action, f"{args.hub_config}: {error}")


def _asker(args: argparse.Namespace) -> Principal:
    """The consortium member the hub asserts to the sites (the hub's operator by default)."""
    person = args.person or getpass.getuser()
    roles: frozenset[Role] = frozenset(
        {"query", "exact"} if getattr(args, "exact", False) else {"query"}
    )
    return Principal(name=f"cli:{person}", roles=roles, person=person)


def _submit(args: argparse.Namespace) -> int:
    from hub.analysis import submit_analysis

    try:
        bundle = ModelBundle.read(args.model)
        cohort = json.loads(args.cohort.read_text(encoding="utf-8"))
        Cohort.model_validate(cohort)
    except BundleError as error:
        return _fail("submit", str(error))
    except (OSError, json.JSONDecodeError) as error:
        return _fail("submit", f"{args.cohort}: {error}")
    except ValidationError as error:
        return _fail("submit", f"{args.cohort}: {describe_validation_error(error)}")
    hub = _hub(args)
    if isinstance(hub, int):
        return hub
    try:
        analysis_id, sites = asyncio.run(
            hub.closing(submit_analysis(hub, bundle, cohort, _asker(args)))
        )
    except ValueError as error:
        return _fail("submit", str(error))
    print(analysis_id)
    print(f"model {bundle.name} {bundle.version} (bundle {bundle.sha256})", file=sys.stderr)
    for site in sites:
        state = (site.get("answer") or {}).get("state") or f"{site['status']}: {site.get('error')}"
        print(f"  {site['name']:<20} {state}", file=sys.stderr)
    return 0 if all(site["status"] == "ok" for site in sites) else 1


def _add_status(actions: Actions) -> None:
    status = actions.add_parser("status", help="each site's progress and the results so far")
    status.add_argument("--hub-config", type=Path, required=True, help="the hub's YAML file")
    status.add_argument("analysis_id")
    status.add_argument("--person", default=None, help="whose budget (default: login name)")
    status.add_argument(
        "--exact", action="store_true", help="ask for exact answers (the sites must allow it)"
    )
    status.add_argument("--json", action="store_true", help="print everything as JSON")


def _status(args: argparse.Namespace) -> int:
    from hub.analysis import analysis_results, analysis_status

    hub = _hub(args)
    if isinstance(hub, int):
        return hub
    asker = _asker(args)

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        statuses = await analysis_status(hub, args.analysis_id, asker)
        return statuses, await analysis_results(hub, statuses, asker)

    statuses, results = asyncio.run(hub.closing(both()))
    if args.json:
        print(json.dumps({"sites": statuses, "results": results}, indent=2))
    else:
        print(f"{'site':<20} {'state':<10} {'selected':>8} {'queued':>7} {'running':>7} "
              f"{'done':>6} {'failed':>6}")  # fmt: skip
        for site in statuses:
            answer = site.get("answer") or {}
            if site["status"] != "ok":
                print(f"{site['name']:<20} {site['status']}: {site.get('error')}")
                continue
            p = answer["progress"]
            print(f"{site['name']:<20} {answer['state']:<10} {p['selected']:>8} {p['queued']:>7} "
                  f"{p['running']:>7} {p['done']:>6} {p['failed']:>6}")  # fmt: skip
        for result in results:
            print(f"\n{result['title']}:")
            for key in ("count", "lower", "upper", "interval", "cells"):
                if key in result:
                    print(f"  combined {key}: {result[key]}")
    return 0 if all(site["status"] == "ok" for site in statuses) else 1


# -- at a site ---------------------------------------------------------------------------------


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")


def _open(args: argparse.Namespace) -> AnalysisStore | None:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"fedgate analysis {args.action}: {error}", file=sys.stderr)
        return None
    return AnalysisStore.open(settings.queue, settings.data_dir)


def _add_list(actions: Actions) -> None:
    listing = actions.add_parser("list", help="the analyses this site received, with progress")
    _config(listing)


def _list(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return 2
    try:
        for analysis in store.list():
            progress = store.progress(analysis.analysis_id)
            print(
                f"{analysis.analysis_id}  {analysis.state:<9}  hub {analysis.hub}  model "
                f"{analysis.installed_model or analysis.model_name + ' (not installed)'}  "
                f"{'validated' if analysis.validated else 'research'}  selected "
                f"{progress.selected}, queued {progress.queued}, running {progress.running}, "
                f"done {progress.done}, failed {progress.failed}"
            )
    finally:
        store.close()
    return 0


def _add_state_changes(actions: Actions) -> None:
    helps = {
        "pause": "start no new research job of the analysis until it is resumed",
        "resume": "let a paused analysis's research jobs start again",
        "cancel": "drop the analysis's jobs that have not started (running ones finish)",
    }
    for action, help_text in helps.items():
        change = actions.add_parser(action, help=help_text, description=help_text)
        _config(change)
        change.add_argument("analysis_id", metavar="ID", help="the analysis ('list' shows it)")
        change.add_argument("--by", default=None, help="who decides (default: the login name)")


def _change_state(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return 2
    try:
        changed = store.set_state(
            args.analysis_id, _STATE_OF[args.action], by=args.by or getpass.getuser()
        )
        progress = store.progress(args.analysis_id)
    except KeyError:
        print(f"fedgate analysis {args.action}: no analysis {args.analysis_id}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"fedgate analysis {args.action}: {error}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(
        f"analysis {changed.analysis_id} {changed.state}: queued {progress.queued}, running "
        f"{progress.running}, done {progress.done}, failed {progress.failed}"
    )
    return 0


def _add_validate_model(actions: Actions) -> None:
    help_text = (
        "mark an installed model validated: its later results go to the clinical PACS, not "
        "the research store"
    )
    validate = actions.add_parser("validate-model", help=help_text, description=help_text)
    _config(validate)
    validate.add_argument("name", help="the installed model's name ('list' shows it)")
    validate.add_argument(
        "--revoke", action="store_true", help="send its later results to the research store"
    )


def _validate_model(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return 2
    try:
        store.set_validated(args.name, not args.revoke)
    except KeyError:
        print(
            f"fedgate analysis validate-model: no analysis installed a model {args.name!r} "
            "('fedgate analysis list' shows the installed names)",
            file=sys.stderr,
        )
        return 2
    finally:
        store.close()
    where = "the research store" if args.revoke else "the clinical PACS"
    print(f"model {args.name}: its results go to {where} from its next job on")
    return 0


def _add_decisions(actions: Actions) -> None:
    for action, help_text in {
        "approve": "approve an analysis: install its model and run it over its cohort here",
        "refuse": "refuse an analysis (recorded; the same model and cohort stay refused)",
    }.items():
        decide = actions.add_parser(action, help=help_text, description=help_text)
        decide.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")
        decide.add_argument("analysis_id")
        decide.add_argument("--by", default=None, help="who decides (default: the login name)")
        decide.add_argument("--note", default="", help="why, for the record")


def _decide(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return 2
    settings = load_settings(args.config)
    approvals = Approvals.open(settings.index, settings.data_dir)
    decide = approve if args.action == "approve" else refuse
    try:
        analysis = store.get(args.analysis_id)
        if analysis is None:
            return _fail(args.action, f"no analysis {args.analysis_id!r} at this site", 1)
        if analysis.state != "pending":
            return _fail(args.action, f"analysis {args.analysis_id} is {analysis.state}", 1)
        decided = decide(
            store, approvals, analysis, by=args.by or getpass.getuser(), note=args.note
        )
    finally:
        store.close()
        approvals.close()
    print(f"analysis {decided.analysis_id} ({decided.model_name}): {decided.state}")
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "submit": _submit,
    "status": _status,
    "list": _list,
    "approve": _decide,
    "refuse": _decide,
    "pause": _change_state,
    "resume": _change_state,
    "cancel": _change_state,
    "validate-model": _validate_model,
}
