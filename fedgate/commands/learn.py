"""``fedgate learn``: federated learning on Flower (docs/learning.md).

- ``fedgate learn validate PLAN.yaml`` checks a training plan and prints its sha256, the
  identity a site's admin approves.
- ``fedgate learn approve --config gateway.yaml SHA256`` approves a plan at this site
  (``refuse``, ``revoke``; ``approvals`` lists every decision taken).
- ``fedgate learn site --config gateway.yaml --superlink HOST:PORT`` runs the site's SuperNode.
- ``fedgate learn run --hub-config hub.yaml PLAN.yaml --out DIR`` runs the hub's side.
- ``fedgate learn superlink --hub-config hub.yaml`` runs the hub's SuperLink in the foreground;
  ``fedgate learn register-site --hub-config hub.yaml KEY.pub --name SITE`` lets a site's
  SuperNode in where the SuperLink authenticates SuperNodes.

Each action has its own ``_add_<action>`` and ``_<action>`` function.
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.approvals import PLAN_KIND, Approvals, DecisionName, SubjectError
from gateway.learning.plan import PlanError, load_plan
from gateway.settings import ConfigError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_validate(actions)
    _add_decisions(actions)
    _add_site(actions)
    _add_run(actions)
    _add_superlink(actions)
    _add_register_site(actions)


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


def _add_site(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    site = actions.add_parser(
        "site",
        help="run this site's Flower SuperNode: it trains approved plans on the site's data",
    )
    site.add_argument("--config", type=Path, required=True, help="the gateway's YAML file")
    site.add_argument("--superlink", required=True, help="the hub's SuperLink, HOST:PORT")
    site.add_argument(
        "--name", default=None, help="this site's name in the hub's reports (default: config name)"
    )
    site.add_argument(
        "--runtime-port",
        type=int,
        default=9094,
        help="loopback port of the SuperNode's runtime API (one per SuperNode on a machine)",
    )
    site.add_argument(
        "--root-certificates",
        type=Path,
        default=None,
        help="CA certificate (PEM) of the SuperLink's TLS; without it, plain HTTP (loopback only)",
    )
    site.add_argument(
        "--auth-key",
        type=Path,
        default=None,
        help="this SuperNode's private key (OpenSSH ECDSA), for SuperLinks that authenticate nodes",
    )


def _site(args: argparse.Namespace) -> int:
    """Runs the site's Flower SuperNode in the foreground, with fedgate's ClientApp executor
    beside it (:mod:`gateway.learning.executor`: ``--isolation process``, the imports done once);
    the site's config path reaches the ClientApp through the node config (``gateway-config``)."""
    from hub.learning.runner import flower_environment  # Flower's process plumbing only

    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"fedgate learn site: {error}", file=sys.stderr)
        return 2
    name = args.name or args.config.stem
    node_config = f'gateway-config="{args.config.resolve()}" site-name="{name}"'
    runtime_api = f"127.0.0.1:{args.runtime_port}"
    # Flower's SuperNode (gateway.learning.supernode: prompt polling during a run) leaves the
    # ClientApp tasks to the executor below (--isolation process).
    supernode = [sys.executable, "-m", "gateway.learning.supernode", "--superlink", args.superlink]
    supernode += ["--node-config", node_config, "--isolation", "process"]
    supernode += ["--host", "127.0.0.1", "--port", str(args.runtime_port)]
    if args.root_certificates is None:
        supernode.append("--insecure")
    else:
        supernode += ["--root-certificates", str(args.root_certificates)]
    if args.auth_key is not None:
        supernode += ["--auth-supernode-private-key", str(args.auth_key)]
    executor = [sys.executable, "-m", "gateway.learning.executor"]
    executor += ["--runtime-api-address", runtime_api]
    environment = flower_environment(settings.data_dir / "learning")
    print(
        f"fedgate learn site: site {name} joins the SuperLink at {args.superlink}", file=sys.stderr
    )
    # Both processes (and the ClientApp tasks the executor forks) stay in this process's
    # group: whoever stops this command by its group stops them all, even by SIGKILL.
    processes = [
        subprocess.Popen(supernode, env=environment),
        subprocess.Popen(executor, env=environment),
    ]

    def stop(signum: int, _frame: Any) -> None:
        # flower-supernode keeps retrying on SIGTERM; the group ends here, this process too.
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # One without the other is no site: when either ends, the other is stopped.
    while all(process.poll() is None for process in processes):
        time.sleep(0.5)
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    return next((process.returncode for process in processes if process.returncode), 0)


def _add_run(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run_ = actions.add_parser(
        "run", help="run a training plan over the sites: the hub's SuperLink side"
    )
    run_.add_argument("--hub-config", type=Path, required=True, help="the hub's YAML file")
    run_.add_argument("plan", type=Path, help="the plan's YAML file")
    run_.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the model (ONNX + model.yaml) and report",
    )


def _print_progress(event: dict[str, Any]) -> None:
    kind = event.pop("event", "?")
    details = ", ".join(f"{key} {value}" for key, value in event.items() if value not in (None, []))
    print(f"[{kind}] {details}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    """Starts a SuperLink (or uses hub.yaml's ``learning.superlink``), submits the plan, prints
    each progress line as it comes, and exits 0 when the run wrote a completed report."""
    import json

    from hub.learning.runner import follow_run, start_superlink, submit_run, wait_for_superlink

    try:
        loaded = load_plan(args.plan)
    except PlanError as error:
        print(f"fedgate learn run: {args.plan}: {error}", file=sys.stderr)
        return 2
    hub = _load_hub(args.hub_config, "run")
    if hub is None:
        return 2
    settings = hub.learning
    # Flower's command-line client keeps its state under FLWR_HOME: the hub's, not ~/.flwr.
    os.environ.setdefault("FLWR_HOME", str(settings.state_dir.resolve() / "flwr"))
    root = settings.tls.ca_certfile if settings.tls else None
    superlink = None
    address = settings.superlink
    if address is None:
        address = f"{settings.host}:{settings.port}"
        superlink = start_superlink(settings, settings.state_dir / "superlink.log")
    try:
        wait_for_superlink(address, tls=settings.tls is not None)
        args.out.mkdir(parents=True, exist_ok=True)
        report_path = args.out / "report.json"
        report_path.unlink(missing_ok=True)
        submitted = submit_run(address, loaded.text, args.out, settings.round_timeout_seconds, root)
        print(
            f"fedgate learn run: run {submitted.run_id} of plan {loaded.sha256} on {address}",
            file=sys.stderr,
        )
        follow_run(submitted, _print_progress)
    except RuntimeError as error:
        print(f"fedgate learn run: {error}", file=sys.stderr)
        return 1
    finally:
        if superlink is not None:
            os.killpg(superlink.pid, signal.SIGTERM)
            superlink.wait(timeout=30)
    if not report_path.exists():
        print("fedgate learn run: the run ended without a report", file=sys.stderr)
        return 1
    report = json.loads(report_path.read_text(encoding="utf-8"))
    if report.get("status") != "completed":
        print(f"fedgate learn run: failed: {report.get('reason')}", file=sys.stderr)
        return 1
    print(args.out / loaded.plan.name)
    return 0


def _load_hub(path: Path, action: str) -> Any:
    from hub.app import HubSettings

    try:
        return HubSettings.load(path)
    except ConfigError as error:
        print(f"fedgate learn {action}: {error}", file=sys.stderr)
        return None


def _add_superlink(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    superlink = actions.add_parser(
        "superlink",
        help="run the hub's Flower SuperLink in the foreground (hub.yaml 'learning:'), for "
        "federations whose SuperNodes are registered (supernode_auth) or that run many plans",
    )
    superlink.add_argument("--hub-config", type=Path, required=True, help="the hub's YAML file")


def _superlink(args: argparse.Namespace) -> int:
    from hub.learning.runner import start_superlink

    hub = _load_hub(args.hub_config, "superlink")
    if hub is None:
        return 2
    settings = hub.learning
    log_path = settings.state_dir / "superlink.log"
    process = start_superlink(settings, log_path)
    print(
        f"fedgate learn superlink: {settings.host}:{settings.port} (log: {log_path})",
        file=sys.stderr,
    )

    def stop(signum: int, _frame: Any) -> None:
        os.killpg(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return process.wait()


def _add_register_site(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register = actions.add_parser(
        "register-site",
        help="let a site's SuperNode in: register its public key at the hub's SuperLink",
    )
    register.add_argument("--hub-config", type=Path, required=True, help="the hub's YAML file")
    register.add_argument(
        "public_key", type=Path, help="the site's SuperNode public key (OpenSSH, EC P-256/384)"
    )
    register.add_argument("--name", required=True, help="the site's name")


def _register_site(args: argparse.Namespace) -> int:
    from hub.learning.runner import register_supernode

    hub = _load_hub(args.hub_config, "register-site")
    if hub is None:
        return 2
    settings = hub.learning
    address = settings.superlink or f"{settings.host}:{settings.port}"
    root = settings.tls.ca_certfile if settings.tls else None
    os.environ.setdefault("FLWR_HOME", str(settings.state_dir.resolve() / "flwr"))
    try:
        node_id = register_supernode(address, args.public_key, args.name, root)
    except ValueError as error:
        print(f"fedgate learn register-site: {error}", file=sys.stderr)
        return 2
    print(f"site {args.name}: SuperNode {node_id} registered at {address}")
    return 0


ACTIONS = {
    "validate": _validate,
    "approve": _decide,
    "refuse": _decide,
    "revoke": _decide,
    "approvals": _list_decisions,
    "site": _site,
    "run": _run,
    "superlink": _superlink,
    "register-site": _register_site,
}
