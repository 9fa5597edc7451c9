"""The site's Flower ClientApp: trains and evaluates the hub's model on this site's own rows.

Run by the site's SuperNode (``fedgate learn site``, which passes this site's gateway config as
the node config ``gateway-config``). Every message from the hub carries the training plan's
text; the ClientApp computes its sha256 and answers only if this site's admin approved exactly
that plan (``fedgate learn approve``): otherwise it replies with an error whose reason, "site X
has not approved plan <sha256>", reaches the hub and the run's progress. Then it builds the
site's training table from its own findings index (:func:`gateway.learning.table.site_table`,
once per run: :mod:`gateway.learning.table_cache`) and answers one of three messages:

- ``query`` (before round 1): the training rows' count, per-feature sums and sums of squares, from
  which the hub standardises every feature with the pooled mean and standard deviation;
- ``train``: the plan's local steps/epochs from the global parameters (Flower's ArrayRecord);
  replies with the new parameters and ``num-examples`` (the training rows, FedAvg's weight);
- ``evaluate``: the model on the held-out rows, aggregates only
  (:func:`gateway.learning.evaluation.site_evaluation`).

No row, identifier or date is in any reply: parameters, counts and sums over rows only.
Under secure aggregation (the plan's ``protection.secure_aggregation``), a ``train`` round is
Flower's SecAgg+ protocol (``secaggplus_mod``): the site's parameters leave it only masked, and
the hub learns only the sum over the sites; a site whose approved plan asks for it refuses to
send its update otherwise. Client-side clipping (Flower's ``fixedclipping_mod``) applies when
the approved plan asks for differential privacy; the hub's strategy wrapper adds the noise.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import structlog
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from gateway.approvals import PLAN_KIND, Approvals
from gateway.learning.evaluation import site_evaluation
from gateway.learning.models import predict_proba, train_locally
from gateway.learning.plan import LoadedPlan, PlanError, parse_plan
from gateway.learning.table import SiteTable
from gateway.learning.table_cache import cached_site_table
from gateway.learning.trace import mark
from gateway.settings import load_settings

__all__ = ["GATEWAY_CONFIG_KEY", "PLAN_KEY", "PlanRefused", "app"]

log = structlog.get_logger("fedgate.learning.client")

#: The node config key (``flower-supernode --node-config``) naming the site's gateway.yaml.
GATEWAY_CONFIG_KEY = "gateway-config"
#: The ConfigRecord entry holding the plan's text in every message from the hub.
PLAN_KEY = "plan"
#: Error codes of a refusal (Flower's Error carries a code and a reason).
REFUSED_NOT_APPROVED = 4031
REFUSED_BAD_PLAN = 4001
REFUSED_PROTECTION = 4032
#: The records of a ``train`` message under SecAgg+: Flower's workflow drives the legacy
#: strategies, whose round comes as a FitIns (its config and parameters) and goes back as a
#: FitRes, beside the protocol's own ConfigRecord (``secaggplus_configs``).
SECURE_CONFIG = "fitins.config"
SECURE_ARRAYS = "fitins.parameters"


class PlanRefused(Exception):
    """The site will not run this plan; the message says why (it reaches the hub)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _secure(message: Message) -> bool:
    """Whether ``message`` is a step of Flower's SecAgg+ protocol."""
    return message.has_content() and RECORD_KEY_CONFIGS in message.content.config_records


def _config(message: Message) -> ConfigRecord:
    records = message.content.config_records
    if SECURE_CONFIG in records:
        return records[SECURE_CONFIG]
    if len(records) != 1:
        raise PlanRefused(REFUSED_BAD_PLAN, "a message from the hub carries one ConfigRecord")
    return next(iter(records.values()))


def _approved_plan(message: Message, context: Context) -> tuple[LoadedPlan, SiteTable, str]:
    """The plan of ``message`` if this site approved it, its table here and the site's name."""

    config_path = Path(str(context.node_config[GATEWAY_CONFIG_KEY]))
    settings = load_settings(config_path)
    site = str(context.node_config.get("site-name", config_path.stem))
    text = str(_config(message).get(PLAN_KEY, ""))
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        loaded: LoadedPlan | None = parse_plan(text.encode("utf-8"))
        problem = ""
    except PlanError as error:
        loaded, problem = None, str(error)
    approvals = Approvals.open(settings.index, settings.data_dir)
    try:
        approved = approvals.is_approved(PLAN_KIND, sha256)
        if not approved and text:
            # The admin sees what was asked for, with its text, on the jobs page and decides.
            summary = (
                {"name": loaded.plan.name, "features": list(loaded.plan.feature_names)}
                if loaded is not None
                else {"problem": problem}
            )
            approvals.ask(
                PLAN_KIND, sha256, content=text, summary=summary, by=f"Flower run {context.run_id}"
            )
    finally:
        approvals.close()
    if not approved:
        raise PlanRefused(REFUSED_NOT_APPROVED, f"site {site} has not approved plan {sha256}")
    if loaded is None:
        raise PlanRefused(REFUSED_BAD_PLAN, f"site {site}: plan {sha256}: {problem}")
    mark("task.approved", site=site)
    # Built once per run, plan and state of the index (gateway.learning.table_cache).
    table = cached_site_table(settings.index, settings.data_dir, loaded, context.run_id)
    mark("task.table", site=site)
    return loaded, table, site


def _number(config: ConfigRecord, key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanRefused(REFUSED_BAD_PLAN, f"{key} in a message from the hub is not a number")
    return float(value)


def _refusal(message: Message, error: PlanRefused) -> Message:
    log.warning("learning.refused", reason=str(error))
    return Message(Error(code=error.code, reason=str(error)), reply_to=message)


def _standardised(x: np.ndarray, config: ConfigRecord) -> np.ndarray:
    mean = np.asarray(config["mean"], dtype=np.float64)
    scale = np.asarray(config["scale"], dtype=np.float64)
    standardised: np.ndarray = (x - mean) / scale
    return standardised


def _protect(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's SecAgg+ (``secaggplus_mod``) on the steps of that protocol, and Flower's
    client-side fixed clipping on ``train`` messages that carry a clipping norm (the hub's DP
    wrapper sends one when the plan asks for differential privacy)."""
    if message.metadata.message_type == "train" and _secure(message):
        if SECURE_CONFIG in message.content.config_records:
            # The step that trains: refuse here, with the reason, before the protocol's
            # masking (which expects a model in the reply, not a refusal).
            try:
                _approved_plan(message, context)
            except PlanRefused as error:
                return _refusal(message, error)
        return secaggplus_mod(message, context, call_next)
    if message.metadata.message_type == "train" and message.has_content():
        config = next(iter(message.content.config_records.values()), None)
        if config is not None and "clipping_norm" in config:
            return fixedclipping_mod(message, context, call_next)
    return call_next(message, context)


def _traced(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Marks when the ClientApp's work on ``message`` starts and ends
    (:mod:`gateway.learning.trace`; nothing unless tracing is on)."""
    site = str(context.node_config.get("site-name", ""))
    mark("task.start", site=site, kind=message.metadata.message_type)
    reply = call_next(message, context)
    mark("task.end", site=site)
    return reply


app = ClientApp(mods=[_traced, _protect])


@app.query()
def describe(message: Message, context: Context) -> Message:
    """Row count, sums and sums of squares of the training rows' features."""
    try:
        loaded, table, site = _approved_plan(message, context)
    except PlanRefused as error:
        return _refusal(message, error)
    x = table.x_train
    metrics = MetricRecord(
        {
            "num-examples": table.n_train,
            "sum": x.sum(axis=0).tolist(),
            "sum-squares": (x * x).sum(axis=0).tolist(),
            "rows-dropped": table.rows_dropped,
        }
    )
    log.info("learning.described", site=site, plan=loaded.sha256, rows=table.n_train)
    content = RecordDict({"metrics": metrics, "site": ConfigRecord({"name": site})})
    return Message(content, reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """The plan's local training from the global parameters."""
    try:
        loaded, table, site = _approved_plan(message, context)
        plan = loaded.plan
        dp = plan.protection.differential_privacy
        config = _config(message)
        secure = _secure(message)
        if plan.protection.secure_aggregation and not secure:
            raise PlanRefused(
                REFUSED_PROTECTION,
                f"site {site}: plan {loaded.sha256} asks for secure aggregation, the hub "
                "asked for this site's update in clear",
            )
        if dp is not None and _number(config, "clipping_norm", -1) != dp.clipping_norm:
            # The site enforces the privacy its admin approved, whatever the hub sends.
            raise PlanRefused(
                REFUSED_PROTECTION,
                f"site {site}: plan {loaded.sha256} asks for clipping at "
                f"{dp.clipping_norm}, the hub did not send it",
            )
        proximal_mu = _number(config, "proximal-mu", 0.0)
        server_round = int(_number(config, "server-round", 0))
    except PlanRefused as error:
        return _refusal(message, error)
    arrays = message.content[SECURE_ARRAYS if secure else "arrays"]
    assert isinstance(arrays, ArrayRecord)
    parameters = train_locally(
        plan.model,
        arrays.to_numpy_ndarrays(),
        _standardised(table.x_train, config),
        table.y_train,
        proximal_mu=proximal_mu,
        seed=plan.evaluation.seed + server_round,
    )
    if secure:
        # secaggplus_mod masks these parameters, weighted by the rows, before they leave.
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(parameters), table.n_train, {})
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=message)
    metrics = MetricRecord({"num-examples": table.n_train})
    reply = RecordDict({"arrays": ArrayRecord(parameters, keep_input=True), "metrics": metrics})
    return Message(reply, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """The global model on the held-out rows: aggregates only."""
    try:
        loaded, table, _site = _approved_plan(message, context)
        config = _config(message)
    except PlanRefused as error:
        return _refusal(message, error)
    arrays = message.content["arrays"]
    assert isinstance(arrays, ArrayRecord)
    scores = predict_proba(
        loaded.plan.model, arrays.to_numpy_ndarrays(), _standardised(table.x_test, config)
    )
    metrics: dict[str, int | float | list[int] | list[float]] = dict(
        site_evaluation(table.y_test, scores, loaded.plan.evaluation)
    )
    metrics["num-examples"] = float(table.n_test)
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)
