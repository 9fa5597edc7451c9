"""Secure aggregation (Flower's SecAgg+) over real processes: three sites' SuperNodes behind a
recording proxy, the same plan run in clear and under SecAgg+.

The bound. Under SecAgg+ each site sends its parameters times ``r = n / max_weight`` quantised
by stochastic rounding to steps of ``2C/T`` (Flower's defaults: clipping range ``C = 8``,
quantisation range ``T = 2**22``), plus masks that cancel in the sum. Each coordinate of the
unmasked mean of ``k`` sites is thus within ``k * 2C/T / sum(r)`` of the exact weighted mean
(plus the rounding of the weights to ``1/T``: ``max|p_i - mean| / (T r_i)``). The next round
carries that error through one gradient step, whose Lipschitz constant on the pooled
standardised rows is ``1 + lr * L`` with ``L = lambda_max(Z'Z / n) / 4`` (the logistic loss's
curvature, intercept included); the test asserts the two runs' models within that bound.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from gateway.learning.models import initial_parameters, train_locally
from gateway.learning.plan import parse_plan
from tests.learning.cohorts import PLAN
from tests.learning.federation import Federation, start_federation

ROUNDS = 2
LEARNING_RATE = 0.8
#: Flower's SecAggPlusWorkflow defaults (clipping_range, quantization_range).
CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 4194304


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = start_federation(tmp_path_factory.mktemp("secagg"), patients=150, sites=3)
    try:
        yield federation
    finally:
        federation.stop()


def _plan(secure: bool) -> str:
    return (
        PLAN.replace(
            "model: {family: logistic_regression}",
            f"model: {{family: logistic_regression, learning_rate: {LEARNING_RATE}}}",
        )
        + f"rounds: {ROUNDS}\nmin_sites: 3\n"
        + f"protection: {{secure_aggregation: {'true' if secure else 'false'}}}\n"
    )


def _site_updates(federation: Federation, plan_text: str, report: dict) -> list[np.ndarray]:
    """Each site's round-1 parameters (coefficients, intercept), as its ClientApp computes them."""
    plan = parse_plan(plan_text.encode()).plan
    mean = np.asarray(report["standardisation"]["mean"])
    scale = np.asarray(report["standardisation"]["scale"])
    start = initial_parameters(plan.model, len(plan.features))
    updates = []
    for site in federation.sites:
        table = site.table(plan_text)
        updates += train_locally(plan.model, start, (table.x_train - mean) / scale, table.y_train)
    return updates


def _on_the_wire(federation: Federation, start: int, array: np.ndarray) -> bool:
    """Whether the bytes of ``array`` (float64, as Flower serialises it) crossed the proxy."""
    assert federation.proxy is not None
    needle = np.ascontiguousarray(array, dtype=np.float64).tobytes()
    return any(
        needle in request or needle in response
        for _, request, response in federation.proxy.exchanges[start:]
    )


def _bound(federation: Federation, plan_text: str, report: dict) -> float:
    tables = [site.table(plan_text) for site in federation.sites]
    rows = [table.n_train for table in tables]
    weights = np.array(rows) / max(rows)
    step = 2 * CLIPPING_RANGE / QUANTIZATION_RANGE
    per_round = len(rows) * step / weights.sum() + 1e-6 / (QUANTIZATION_RANGE * weights.min())
    mean = np.asarray(report["standardisation"]["mean"])
    scale = np.asarray(report["standardisation"]["scale"])
    z = np.vstack([(table.x_train - mean) / scale for table in tables])
    z = np.hstack([z, np.ones((len(z), 1))])  # the intercept's column
    curvature = float(np.linalg.eigvalsh(z.T @ z / len(z)).max()) / 4
    lipschitz = 1 + LEARNING_RATE * curvature
    return per_round * sum(lipschitz**r for r in range(ROUNDS))


def test_secure_aggregation_learns_fedavgs_model_and_no_site_update_crosses_in_clear(
    federation: Federation,
) -> None:
    assert federation.proxy is not None
    clear_text, secure_text = _plan(secure=False), _plan(secure=True)
    for site in federation.sites:
        site.approve(clear_text)
        site.approve(secure_text)

    clear_start = len(federation.proxy.exchanges)
    clear = federation.run(clear_text)
    assert clear.returncode == 0, clear.progress[-3000:]
    secure_start = len(federation.proxy.exchanges)
    secure = federation.run(secure_text)
    assert secure.returncode == 0, secure.progress[-3000:]
    assert secure.report["secure_aggregation"] is True
    assert secure.report["sites"] == ["site1", "site2", "site3"] and not secure.report["absent"]

    # Without SecAgg+ the sites' round-1 coefficients cross the wire as they are (the check
    # can see them); with it, none of them does: only masked, quantised integers.
    updates = _site_updates(federation, clear_text, clear.report)
    assert all(_on_the_wire(federation, clear_start, update) for update in updates[0::2])
    updates = _site_updates(federation, secure_text, secure.report)
    crossed = [_on_the_wire(federation, secure_start, update) for update in updates[0::2]]
    assert crossed == [False, False, False]

    # The same model as FedAvg in clear, within the quantisation bound.
    bound = _bound(federation, clear_text, clear.report)
    assert bound < 1e-4
    for secured, plain in zip(secure.report["parameters"], clear.report["parameters"], strict=True):
        np.testing.assert_allclose(secured, plain, atol=bound, rtol=0)
    # ... and not bit for bit: the secure run's model went through the protocol's quantisation.
    assert not np.array_equal(secure.report["parameters"][0], clear.report["parameters"][0])


def test_a_site_that_approved_secure_aggregation_refuses_to_send_its_update_in_clear(
    federation: Federation,
) -> None:
    """A hub that ignored the plan's protection would ask for the site's update in clear: the
    site's ClientApp (called here as its executor calls it) refuses, and says why."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from gateway.learning.client import GATEWAY_CONFIG_KEY, app

    site = federation.sites[0]
    # What Flower's runtime sets in a ClientApp's process for its task.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    context = Context(
        run_id=1,
        node_id=1,
        node_config={GATEWAY_CONFIG_KEY: str(site.config), "site-name": site.name},
        state=RecordDict(),
        run_config={},
    )
    replies = {}
    for secure in (False, True):
        text = _plan(secure)
        site.approve(text)
        plan = parse_plan(text.encode()).plan
        width = len(plan.features)
        config = ConfigRecord({"plan": text, "mean": [0.0] * width, "scale": [1.0] * width})
        arrays = ArrayRecord(initial_parameters(plan.model, width), keep_input=True)
        message = Message(
            RecordDict({"arrays": arrays, "config": config}), dst_node_id=1, message_type="train"
        )
        replies[secure] = app(message, context)
    assert not replies[False].has_error()
    assert replies[True].has_error()
    assert "asks for secure aggregation" in replies[True].error.reason
