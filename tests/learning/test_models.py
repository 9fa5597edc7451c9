"""The model families as Flower exchanges them: local training, FedAvg, ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from sklearn.linear_model import LogisticRegression

from gateway.learning.models import initial_parameters, predict_proba, train_locally
from gateway.learning.plan import parse_plan
from hub.learning.export import MANIFEST_NAME, MODEL_FILE_NAME, fitted_pipeline, write_model
from tests.learning.cohorts import PLAN


def _sites(seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three sites of different sizes and case mix, labels from a known logistic model."""
    rng = np.random.default_rng(seed)
    sites = []
    for n, shift in ((120, 0.0), (300, 0.5), (80, -0.7)):
        x = rng.normal(loc=shift, size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-(x @ [1.0, -2.0, 0.5] + 0.3)))).astype(float)
        sites.append((x, y))
    return sites


def _fedavg(parameters: list[list[np.ndarray]], weights: list[int]) -> list[np.ndarray]:
    total = sum(weights)
    return [
        sum(site[i] * (n / total) for site, n in zip(parameters, weights, strict=True))
        for i in range(len(parameters[0]))
    ]


def test_fedavg_of_full_batch_steps_is_gradient_descent_on_the_pooled_rows() -> None:
    spec = parse_plan(PLAN.encode()).plan.model.model_copy(update={"learning_rate": 1.0})
    sites = _sites()
    pooled_x = np.vstack([x for x, _ in sites])
    pooled_y = np.concatenate([y for _, y in sites])
    federated = initial_parameters(spec, 3)
    centralised = [array.copy() for array in federated]
    for _ in range(1500):
        federated = _fedavg(
            [train_locally(spec, federated, x, y) for x, y in sites], [len(y) for _, y in sites]
        )
        # Centralised gradient descent, written out: the mean log-loss gradient of all rows.
        residual = 1 / (1 + np.exp(-(pooled_x @ centralised[0] + centralised[1][0]))) - pooled_y
        centralised = [
            centralised[0] - pooled_x.T @ residual / len(pooled_y),
            centralised[1] - residual.mean(),
        ]
    np.testing.assert_allclose(federated[0], centralised[0], atol=1e-9)
    np.testing.assert_allclose(federated[1], centralised[1], atol=1e-9)
    # ... which converges to the maximum-likelihood fit scikit-learn finds on the pooled rows.
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)
    reference.fit(pooled_x, pooled_y)
    np.testing.assert_allclose(federated[0], reference.coef_[0], atol=1e-6)
    np.testing.assert_allclose(federated[1], reference.intercept_, atol=1e-6)


@pytest.mark.parametrize("family", ["logistic_regression", "sgd", "mlp"])
def test_exported_onnx_gives_sklearns_probabilities(family: str, tmp_path: Path) -> None:
    loaded = parse_plan(
        PLAN.replace(
            "model: {family: logistic_regression}", f"model: {{family: {family}}}"
        ).encode()
    )
    rng = np.random.default_rng(5)
    mean, scale = [60.0, 0.5, 0.3, 55.0, 4.0, 420.0], [10.0, 0.5, 0.45, 8.0, 5.0, 25.0]
    x = rng.normal(mean, scale, size=(200, 6))
    y = (rng.random(200) < 0.3).astype(float)
    parameters = initial_parameters(loaded.plan.model, 6, seed=1)
    for _ in range(3):
        parameters = train_locally(loaded.plan.model, parameters, (x - mean) / scale, y)
    folder = write_model(tmp_path, loaded, parameters, mean, scale)
    session = onnxruntime.InferenceSession(str(folder / MODEL_FILE_NAME))
    _, probabilities = session.run(None, {"features": x})
    expected = fitted_pipeline(loaded, parameters, mean, scale).predict_proba(x)[:, 1]
    np.testing.assert_allclose(probabilities[:, 1], expected, atol=1e-6, rtol=0)
    # ... and those are the probabilities the sites computed during evaluation.
    np.testing.assert_allclose(
        expected, predict_proba(loaded.plan.model, parameters, (x - mean) / scale), atol=1e-9
    )
    assert (folder / MANIFEST_NAME).read_text().startswith(f"name: {loaded.plan.name}")


def _distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(
        np.linalg.norm(np.concatenate([np.ravel(x - y) for x, y in zip(a, b, strict=True)]))
    )


@pytest.mark.parametrize(
    "model",
    [
        "{family: sgd, learning_rate: 0.01, local_epochs: 5}",
        "{family: mlp, hidden_layers: [8], learning_rate: 0.01, local_epochs: 5}",
    ],
)
def test_fedprox_pulls_sgd_and_mlp_toward_the_global_model(model: str) -> None:
    """The larger mu, the closer a site's model stays to the round's global model."""
    spec = parse_plan(
        PLAN.replace("model: {family: logistic_regression}", f"model: {model}").encode()
    ).plan.model
    x, y = _sites()[1]
    rng = np.random.default_rng(1)
    start = [a + rng.normal(scale=0.1, size=a.shape) for a in initial_parameters(spec, 3)]
    distances = [
        _distance(train_locally(spec, start, x, y, proximal_mu=mu, seed=4), start)
        for mu in (0.0, 1.0, 10.0)
    ]
    assert distances == sorted(distances, reverse=True), distances
    assert distances[-1] < distances[0] / 3, distances


def test_fedprox_is_the_proximal_step_after_each_epoch() -> None:
    """One local epoch of SGD, then w <- (w + tau mu w_global) / (1 + tau mu) with tau the
    learning rate times the epoch's updates (one per row)."""
    spec = parse_plan(
        PLAN.replace(
            "model: {family: logistic_regression}",
            "model: {family: sgd, learning_rate: 0.01, local_epochs: 1}",
        ).encode()
    ).plan.model
    x, y = _sites()[0]
    start = [np.array([0.3, -0.2, 0.1]), np.array([0.05])]
    plain = train_locally(spec, start, x, y, seed=2)
    mu, tau = 0.5, 0.01 * len(y)
    proximal = train_locally(spec, start, x, y, proximal_mu=mu, seed=2)
    for got, free, anchor in zip(proximal, plain, start, strict=True):
        np.testing.assert_allclose(got, (free + tau * mu * anchor) / (1 + tau * mu), atol=1e-12)


def test_an_mlp_round_runs_exactly_the_plans_local_epochs() -> None:
    """FedAvg's E local passes per round, even where scikit-learn would call the training
    converged (its default stops after 10 epochs without a loss improvement of 1e-4): on
    labels unrelated to the features, at a tiny learning rate, 40 epochs end elsewhere than 12."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (rng.random(300) < 0.5).astype(np.int8)

    def epochs(count: int) -> list[np.ndarray]:
        model = f"{{family: mlp, hidden_layers: [4], learning_rate: 1e-6, local_epochs: {count}}}"
        spec = parse_plan(PLAN.replace("{family: logistic_regression}", model).encode()).plan
        start = initial_parameters(spec.model, 3, 0)
        return train_locally(spec.model, start, x, y, seed=1)

    twelve, forty = epochs(12), epochs(40)
    assert not all(np.array_equal(a, b) for a, b in zip(twelve, forty, strict=True))
    # ... and 40 epochs are deterministic (the same seed, the same passes).
    assert all(np.array_equal(a, b) for a, b in zip(forty, epochs(40), strict=True))
