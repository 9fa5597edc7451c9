"""``fedgate analysis``: federated analyses at this site (docs/analysis.md).

- ``fedgate analysis list --config gateway.yaml`` lists the analyses received, with progress.
- ``fedgate analysis pause|resume|cancel --config gateway.yaml ID`` stops new research jobs
  of an analysis, lets them start again, or drops its jobs that have not started (running ones
  finish).
- ``fedgate analysis validate-model --config gateway.yaml NAME`` marks an installed model
  (the name ``list`` shows) validated: its later results go to the clinical PACS instead of
  the research store (``--revoke`` sends them back to the research store).

Each action has its own ``_add_<action>`` and ``_<action>`` function, registered in ACTIONS.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from gateway.analysis.records import AnalysisState
from gateway.analysis.store import AnalysisStore
from gateway.settings import ConfigError, load_settings

#: What each of pause, resume and cancel asks of an analysis's state.
_STATE_OF: dict[str, AnalysisState] = {
    "pause": "paused",
    "resume": "running",
    "cancel": "cancelled",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_list(actions)
    _add_state_changes(actions)
    _add_validate_model(actions)


def run(args: argparse.Namespace) -> int:
    action: int = ACTIONS[args.action](args)
    return action


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")


def _open(args: argparse.Namespace) -> AnalysisStore | None:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"fedgate analysis {args.action}: {error}", file=sys.stderr)
        return None
    return AnalysisStore.open(settings.queue, settings.data_dir)


def _add_list(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_state_changes(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_validate_model(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


ACTIONS = {
    "list": _list,
    "pause": _change_state,
    "resume": _change_state,
    "cancel": _change_state,
    "validate-model": _validate_model,
}
