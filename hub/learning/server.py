"""The hub's Flower ServerApp: one training plan, federated over the sites' SuperNodes.

Started by Flower's SuperLink for a run that ``fedgate learn run`` submits
(:mod:`hub.learning.runner`); its run config holds the plan's text and the output folder. It

1. waits for ``min_sites`` SuperNodes, then asks each for its training rows' count, feature sums
   and sums of squares (a ``query`` message): a site that has not approved the plan refuses,
   and its reason is reported; fewer than ``min_sites`` willing sites end the run;
2. standardises every feature with the pooled mean and standard deviation (aggregates only);
3. runs the plan's rounds with Flower's FedAvg (or FedProx), weighted by each site's training
   rows, wrapped in Flower's client-side fixed-clipping DP when the plan asks for it, or under
   Flower's SecAgg+ when the plan asks for secure aggregation (:func:`_secure_rounds`). A round
   completes with the sites that answered within the round timeout if they are at least
   ``min_sites``; the absent ones are reported;
4. asks each site for its evaluation on its held-out rows and pools them
   (:mod:`hub.learning.pooling`);
5. writes the model repository entry (:mod:`hub.learning.export`) and the report.

Each step prints one progress line, ``fedgate-progress {json}``, which Flower streams to the
``fedgate learn run`` that follows the run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAvg,
    FedProx,
    Strategy,
)

from gateway.learning.models import initial_parameters
from gateway.learning.pace import quicken_object_pulls
from gateway.learning.plan import LoadedPlan, PlanError, parse_plan
from hub.learning.export import write_model, write_report
from hub.learning.grid import PromptGrid
from hub.learning.pooling import pooled_evaluation

__all__ = ["PROGRESS_PREFIX", "app"]

#: Marks a progress line in the run's log (one JSON object follows).
PROGRESS_PREFIX = "fedgate-progress "


S = TypeVar("S", bound=FedAvg)


class RunFailed(Exception):
    """The run cannot go on (a plan the hub cannot read, quorum lost); the message says why."""


def progress(event: str, **fields: Any) -> None:
    """One progress line for ``fedgate learn run`` (Flower streams the ServerApp's output)."""
    print(PROGRESS_PREFIX + json.dumps({"event": event, **fields}), flush=True)


class Federation:
    """The sites taking part: node id -> site name, and what each said or failed to say."""

    def __init__(self) -> None:
        self.sites: dict[int, str] = {}
        #: Each willing site's training rows (its FedAvg weight).
        self.rows: dict[int, int] = {}
        self.refused: list[str] = []
        self.absent: dict[str, list[int]] = {}
        #: Per round, how far the sites' models moved from the round's global model: the mean
        #: over the answering sites, weighted by their rows, of ||w_site - w_global|| (all
        #: parameters as one vector). FedProx's proximal term exists to keep it small.
        self.drift: list[float] = []

    def name(self, node_id: int) -> str:
        return self.sites.get(node_id, f"node {node_id}")

    def note_absent(self, node_ids: Iterable[int], server_round: int) -> list[str]:
        names = sorted(self.name(node_id) for node_id in node_ids)
        for name in names:
            self.absent.setdefault(name, []).append(server_round)
        return names


def _quorum_strategy(base: type[S], federation: Federation, min_sites: int) -> type[S]:
    """``base`` (FedAvg or FedProx) that sends only to the willing sites and reports, each
    round, who answered and who did not; below ``min_sites`` answers the run ends."""

    class QuorumStrategy(base):  # type: ignore[valid-type, misc]
        #: The round's global model, which each site's drift is measured from.
        global_parameters: list[np.ndarray] = []  # noqa: RUF012  (replaced, never mutated)

        def configure_train(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            self.global_parameters = arrays.to_numpy_ndarrays()
            # Flower samples the connected nodes: a site that refused the plan (reported once,
            # before round 1) is not asked; one that disconnected is not sampled, and is
            # reported absent in each round it misses.
            return [
                message
                for message in super().configure_train(server_round, arrays, config, grid)
                if message.metadata.dst_node_id in federation.sites
            ]

        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = list(replies)
            answered = {reply.metadata.src_node_id for reply in replies if reply.has_content()}
            absent = federation.note_absent(set(federation.sites) - answered, server_round)
            if len(answered) < min_sites:
                raise RunFailed(
                    f"round {server_round}: {len(answered)} sites answered, the plan needs "
                    f"{min_sites} (absent: {', '.join(absent) or 'none'})"
                )
            drift = _drift(self.global_parameters, [r for r in replies if r.has_content()])
            arrays, metrics = super().aggregate_train(server_round, replies)
            federation.drift.append(drift)
            progress(
                "round",
                round=server_round,
                sites=sorted(federation.name(node_id) for node_id in answered),
                absent=absent,
                rows=sum(_rows(reply) for reply in replies if reply.has_content()),
                drift=round(drift, 6),
            )
            return arrays, metrics

    return cast(type[S], QuorumStrategy)


def _drift(global_parameters: list[np.ndarray], replies: list[Message]) -> float:
    """The rows-weighted mean distance of the sites' models from the global one."""
    anchor = np.concatenate([np.ravel(a) for a in global_parameters])
    distances, weights = [], []
    for reply in replies:
        arrays = reply.content["arrays"]
        assert isinstance(arrays, ArrayRecord)
        local = np.concatenate([np.ravel(a) for a in arrays.to_numpy_ndarrays()])
        distances.append(float(np.linalg.norm(local - anchor)))
        weights.append(_rows(reply))
    return float(np.average(distances, weights=weights)) if sum(weights) else 0.0


def _rows(reply: Message) -> int:
    """The training rows a site's reply says it used (FedAvg's weight)."""
    metrics = reply.content["metrics"]
    assert isinstance(metrics, MetricRecord)
    value = metrics["num-examples"]
    return int(value) if isinstance(value, int | float) else 0


def _send(
    grid: Grid, node_ids: Iterable[int], content: RecordDict, message_type: str, timeout: float
) -> list[Message]:
    messages = [
        Message(content, dst_node_id=node_id, message_type=message_type) for node_id in node_ids
    ]
    return list(grid.send_and_receive(messages, timeout=timeout))


def _wait_for_sites(grid: Grid, min_sites: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(node_ids := list(grid.get_node_ids())) < min_sites:
        if time.monotonic() > deadline:
            raise RunFailed(
                f"{len(node_ids)} SuperNodes connected within {timeout:.0f} s, "
                f"the plan needs {min_sites}"
            )
        time.sleep(0.1)
    return node_ids


def _standardisation(
    grid: Grid, loaded: LoadedPlan, federation: Federation, timeout: float
) -> tuple[list[float], list[float], int]:
    """Ask every connected site for its sums; returns the pooled mean, standard deviation and
    the total training rows, and fills ``federation`` with the willing sites."""
    node_ids = _wait_for_sites(grid, loaded.plan.min_sites, timeout)
    config = ConfigRecord({"plan": loaded.text})
    replies = _send(grid, node_ids, RecordDict({"config": config}), "query", timeout)
    total = np.zeros(len(loaded.plan.features))
    squares = np.zeros(len(loaded.plan.features))
    rows = 0
    for reply in replies:
        node_id = reply.metadata.src_node_id
        if reply.has_error():
            reason = reply.error.reason or f"node {node_id} refused"
            federation.refused.append(reason)
            progress("refused", reason=reason)
            continue
        metrics = reply.content["metrics"]
        assert isinstance(metrics, MetricRecord)
        names = reply.content.config_records.get("site")
        federation.sites[node_id] = str(names["name"]) if names else f"node {node_id}"
        federation.rows[node_id] = int(metrics["num-examples"])  # type: ignore[arg-type]
        rows += int(metrics["num-examples"])  # type: ignore[arg-type]
        total += np.asarray(metrics["sum"], dtype=np.float64)
        squares += np.asarray(metrics["sum-squares"], dtype=np.float64)
        progress("site", site=federation.name(node_id), rows=int(metrics["num-examples"]))  # type: ignore[arg-type]
    if len(federation.sites) < loaded.plan.min_sites:
        raise RunFailed(
            f"{len(federation.sites)} sites agreed to run plan {loaded.sha256}, it needs "
            f"{loaded.plan.min_sites}" + "".join(f"; {reason}" for reason in federation.refused)
        )
    if rows < 2:
        raise RunFailed("the willing sites hold fewer than 2 training rows in all")
    mean = total / rows
    variance = np.maximum(squares / rows - mean * mean, 0.0)
    # A constant feature keeps scale 1 rather than dividing by zero.
    scale = np.where(variance > 1e-24, np.sqrt(variance), 1.0)
    return mean.tolist(), scale.tolist(), rows


def _strategy(loaded: LoadedPlan, federation: Federation) -> Strategy:
    plan = loaded.plan
    min_sites = plan.min_sites
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,  # the hub's own evaluation follows the last round
        "min_train_nodes": min_sites,
        "min_available_nodes": min_sites,
    }
    if plan.strategy.name == "fedprox":
        # Flower's FedProx sends proximal_mu ("proximal-mu") in each round's config; the
        # ClientApp's training adds the term (gateway.learning.models: every family).
        fedprox = _quorum_strategy(FedProx, federation, min_sites)
        strategy: Strategy = fedprox(proximal_mu=plan.strategy.proximal_mu, **common)
    else:
        strategy = _quorum_strategy(FedAvg, federation, min_sites)(**common)
    dp = plan.protection.differential_privacy
    if dp is not None:
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy,
            noise_multiplier=dp.noise_multiplier,
            clipping_norm=dp.clipping_norm,
            num_sampled_clients=len(federation.sites),
        )
    return strategy


def _secure_rounds(
    grid: Grid,
    context: Context,
    loaded: LoadedPlan,
    federation: Federation,
    config: ConfigRecord,
    initial: list[np.ndarray],
    timeout: float,
) -> list[np.ndarray]:
    """The plan's rounds under Flower's SecAgg+ (``SecAggPlusWorkflow``); the final parameters.

    Flower 1.42's SecAgg+ workflow drives a legacy strategy (``flwr.server.strategy``) through
    its ``DefaultWorkflow``: each round is four steps per site (key setup, key shares, masked
    update, unmasking). Each site quantises its parameters times its weight ``n / max_weight``
    and masks them; the hub learns only the sum of the weighted updates and of the weights, and
    divides: the FedAvg weighted by rows, as without SecAgg+, within the quantisation error
    (docs/learning.md). ``max_weight`` is the largest site's rows, so that no weight exceeds 1.
    At least max(3, ``min_sites``) sites must answer every step of a round (the protocol's
    reconstruction threshold)."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    plan = loaded.plan
    completed: list[int] = []
    # The legacy FitIns config is typed for scalars; Flower carries it as a ConfigRecord, which
    # holds the standardisation's lists as the message API's does.
    fit_config: dict[str, Any] = dict(config)
    if plan.strategy.name == "fedprox":
        fit_config["proximal-mu"] = plan.strategy.proximal_mu

    class SecureFedAvg(LegacyFedAvg):
        """Flower's legacy FedAvg over the willing sites only, reporting each round."""

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            return [
                (proxy, fitins)
                for proxy, fitins in super().configure_fit(server_round, parameters, client_manager)
                if proxy.node_id in federation.sites
            ]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            answered = {proxy.node_id for proxy, _ in results}
            absent = federation.note_absent(set(federation.sites) - answered, server_round)
            completed.append(server_round)
            progress(
                "round",
                round=server_round,
                sites=sorted(federation.name(node_id) for node_id in answered),
                absent=absent,
                rows=sum(fitres.num_examples for _, fitres in results),
                secure_aggregation=True,
            )
            # SecAgg+ has set every result to the unmasked weighted mean already.
            return super().aggregate_fit(server_round, results, failures)

    strategy = SecureFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,  # the hub's own evaluation follows the last round
        min_fit_clients=plan.min_sites,
        min_available_clients=plan.min_sites,
        initial_parameters=ndarrays_to_parameters(initial),
        on_fit_config_fn=lambda server_round: {**fit_config, "server-round": server_round},
    )
    legacy = LegacyContext(
        context,
        config=ServerConfig(num_rounds=plan.rounds, round_timeout=timeout),
        strategy=strategy,
    )
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,  # every site holds a share of every other's secrets
        reconstruction_threshold=max(3, plan.min_sites),
        max_weight=float(max(federation.rows.values())),
        timeout=timeout,
    )
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    if len(completed) < plan.rounds:
        raise RunFailed(
            f"secure aggregation stopped after {len(completed)} of {plan.rounds} rounds: "
            f"fewer than {max(3, plan.min_sites)} sites took part in every step"
        )
    parameters = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    if max(float(np.max(np.abs(array))) for array in parameters) >= 0.99 * workflow.clipping_range:
        # Larger values were clipped by the protocol's quantisation: the model is not FedAvg's.
        raise RunFailed(
            f"a parameter reached SecAgg+'s clipping range (±{workflow.clipping_range}); "
            "the plan's model cannot be aggregated securely as it stands"
        )
    return parameters


def _evaluate(
    grid: Grid,
    loaded: LoadedPlan,
    federation: Federation,
    arrays: ArrayRecord,
    config: ConfigRecord,
    timeout: float,
) -> dict[str, dict[str, Any]]:
    content = RecordDict({"arrays": arrays, "config": config})
    # Sites Flower knows to be gone are not asked (nor waited for).
    connected = set(grid.get_node_ids())
    replies = _send(
        grid, [n for n in federation.sites if n in connected], content, "evaluate", timeout
    )
    sites: dict[str, dict[str, Any]] = {}
    for reply in replies:
        name = federation.name(reply.metadata.src_node_id)
        if reply.has_error():
            progress("evaluation-refused", site=name, reason=reply.error.reason)
            continue
        metrics = reply.content["metrics"]
        assert isinstance(metrics, MetricRecord)
        sites[name] = dict(metrics)
        progress("evaluated", site=name, n=sites[name]["n"], auc=sites[name].get("auc"))
    return sites


def run_plan(
    grid: Grid, context: Context, loaded: LoadedPlan, out: Path, timeout: float
) -> dict[str, Any]:
    """The whole run (steps 1-5 above); returns the report that was written to ``out``."""
    plan = loaded.plan
    federation = Federation()
    started = time.monotonic()
    mean, scale, rows = _standardisation(grid, loaded, federation, timeout)
    progress("standardised", sites=sorted(federation.sites.values()), rows=rows)
    config = ConfigRecord({"plan": loaded.text, "mean": mean, "scale": scale})
    initial = ArrayRecord(
        initial_parameters(plan.model, len(plan.features), plan.evaluation.seed), keep_input=True
    )
    if plan.protection.secure_aggregation:
        parameters = _secure_rounds(
            grid, context, loaded, federation, config, initial.to_numpy_ndarrays(), timeout
        )
        arrays = ArrayRecord(parameters, keep_input=True)
    else:
        result = _strategy(loaded, federation).start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=plan.rounds,
            timeout=timeout,
            train_config=config,
        )
        arrays = result.arrays
        parameters = arrays.to_numpy_ndarrays()
    sites = _evaluate(grid, loaded, federation, arrays, config, timeout)
    pooled = pooled_evaluation(sites)
    progress("pooled", auc=pooled.get("auc"), n=pooled.get("n"))
    write_model(out, loaded, parameters, mean, scale)
    report = {
        "status": "completed",
        "plan": {"name": plan.name, "sha256": loaded.sha256, "model": plan.model.family},
        "rounds": plan.rounds,
        "secure_aggregation": plan.protection.secure_aggregation,
        "sites": sorted(federation.sites.values()),
        "refused": federation.refused,
        "absent": federation.absent,
        "drift": federation.drift,
        "training_rows": rows,
        "standardisation": {"mean": mean, "scale": scale},
        "parameters": [array.tolist() for array in parameters],
        "evaluation": {"sites": sites, "pooled": pooled},
        "seconds": round(time.monotonic() - started, 3),
    }
    write_report(out, report)
    progress("done", out=str(out))
    return report


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry point: the plan's text, the output folder and the per-step timeout come
    in the run config that ``fedgate learn run`` submits."""
    quicken_object_pulls()
    out = Path(str(context.run_config["out"]))
    timeout = float(str(context.run_config.get("timeout", 120.0)))
    try:
        loaded = parse_plan(str(context.run_config["plan"]).encode("utf-8"))
        run_plan(PromptGrid(grid), context, loaded, out, timeout)
    except (RunFailed, PlanError) as error:
        progress("failed", reason=str(error))
        write_report(out, {"status": "failed", "reason": str(error)})
        sys.exit(1)
