"""The model families of a training plan as lists of NumPy arrays (what Flower exchanges).

Shared language of the sites and the hub, like :mod:`gateway.learning.plan`: the hub builds the
first parameters and exports the last ones; each site trains from the global parameters on its
own (standardised) training rows. Nothing here reads site data.

- ``logistic_regression``: ``[coef (d,), intercept (1,)]``, trained by full-batch gradient steps
  on the mean log loss (+ ``l2/2 ||coef||^2``, + FedProx's ``mu/2 ||w - w_global||^2``). One
  round of one step at every site, averaged with weights n (FedAvg), is exactly one step of
  centralised gradient descent on the pooled rows: the average of the sites' mean gradients
  weighted by their row counts is the pooled mean gradient.
- ``sgd``: the same parameters, trained by scikit-learn's ``SGDClassifier`` (log loss, constant
  learning rate) for the plan's local epochs from the global parameters.
- ``mlp``: ``[W1, ..., Wk, b1, ..., bk]`` of scikit-learn's ``MLPClassifier`` (``coefs_`` then
  ``intercepts_``), trained by Adam for the plan's local epochs from the global parameters.

FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks", MLSys) has each site
minimise ``F_k(w) + mu/2 ||w - w_global||^2`` instead of its own loss ``F_k(w)``. For logistic
regression the term's gradient ``mu (w - w_global)`` joins each full-batch step. For ``sgd`` and
``mlp``, whose steps scikit-learn takes, each local epoch is followed by the proximal step of
that term (forward-backward splitting: gradient steps on ``F_k``, then the term's proximal
operator)::

    w <- argmin_v mu/2 ||v - w_global||^2 + 1/(2 tau) ||v - w||^2
       = (w + tau mu w_global) / (1 + tau mu)

with ``tau`` the epoch's step length: the learning rate times the epoch's updates (one per row
for ``sgd``, one per batch for ``mlp``). It pulls every parameter toward the round's global
model by the fraction ``tau mu / (1 + tau mu)``, whatever ``mu`` (no step can overshoot). At
``mu = 0`` there is no proximal step and training is exactly FedAvg's.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from gateway.learning.plan import LogisticRegressionModel, MLPModel, ModelSpec, SGDModel

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

# scikit-learn is imported where a family needs it, not here: importing it costs seconds that
# logistic regression does not need (the hub's ServerApp, a site's table tools). The site's
# ClientApp executor imports it once for all messages (gateway.learning.executor).

__all__ = [
    "Parameters",
    "initial_parameters",
    "predict_proba",
    "sklearn_estimator",
    "train_locally",
]

Parameters = list[np.ndarray]


def initial_parameters(spec: ModelSpec, n_features: int, seed: int = 0) -> Parameters:
    """The global model before round 1: zeros for the linear models; for the MLP, scikit-learn's
    own initialisation (Glorot uniform), drawn once at the hub so that every site starts from
    the same network."""
    if isinstance(spec, MLPModel):
        network = _mlp(spec, seed)
        _initialise_mlp(network, n_features)
        return [*network.coefs_, *network.intercepts_]
    return [np.zeros(n_features), np.zeros(1)]


def train_locally(
    spec: ModelSpec,
    parameters: Parameters,
    x: np.ndarray,
    y: np.ndarray,
    *,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> Parameters:
    """One round at one site: the plan's local steps/epochs on ``x, y`` (standardised) from the
    global ``parameters``; returns the site's new parameters."""
    if isinstance(spec, LogisticRegressionModel):
        return _gradient_steps(spec, parameters, x, y, proximal_mu)
    from sklearn.exceptions import ConvergenceWarning

    if isinstance(spec, SGDModel):
        from sklearn.linear_model import SGDClassifier

        linear = SGDClassifier(
            loss="log_loss",
            learning_rate="constant",
            eta0=spec.learning_rate,
            alpha=spec.alpha,
            # Without FedProx, all the local epochs in one fit; with it, one epoch at a time.
            max_iter=1 if proximal_mu else spec.local_epochs,
            tol=None,
            random_state=seed,
        )
        with warnings.catch_warnings():
            # max_iter is the plan's local epochs, not a convergence criterion.
            warnings.simplefilter("ignore", ConvergenceWarning)
            # Copies: scikit-learn trains coef_init in place, and the global model is FedProx's
            # anchor (and the caller's).
            linear.fit(
                x, y, coef_init=parameters[0][None, :].copy(), intercept_init=parameters[1].copy()
            )
            if proximal_mu:
                # One update per row and epoch (scikit-learn's SGD has no mini-batches).
                tau = spec.learning_rate * len(y)
                for epoch in range(spec.local_epochs):
                    if epoch:
                        linear.partial_fit(x, y)
                    # In place: partial_fit goes on from these very arrays.
                    _proximal_step(
                        [linear.coef_[0], linear.intercept_], parameters, tau * proximal_mu
                    )
        return [linear.coef_[0].astype(np.float64), linear.intercept_.astype(np.float64)]
    network = _mlp(spec, seed, warm=True)
    _set_mlp(network, parameters, x.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if not proximal_mu:
            network.fit(x, y)
        else:
            assert isinstance(spec, MLPModel)
            tau = spec.learning_rate * -(-len(y) // min(spec.batch_size, len(y)))
            for _ in range(spec.local_epochs):
                # One epoch; Adam's state carries over from one call to the next.
                network.partial_fit(x, y)
                # In place: Adam updates these very arrays in the next epoch.
                _proximal_step(
                    [*network.coefs_, *network.intercepts_], parameters, tau * proximal_mu
                )
    return [*network.coefs_, *network.intercepts_]


def _proximal_step(local: Parameters, global_: Parameters, tau_mu: float) -> None:
    """FedProx's proximal operator (the module's description), applied in place:
    ``w <- (w + tau mu w_global) / (1 + tau mu)``."""
    for array, anchor in zip(local, global_, strict=True):
        array += tau_mu * np.asarray(anchor, dtype=np.float64)
        array /= 1.0 + tau_mu


def predict_proba(spec: ModelSpec, parameters: Parameters, x: np.ndarray) -> np.ndarray:
    """The probability of the label (class 1) for each row of ``x`` (standardised)."""
    if isinstance(spec, MLPModel):
        network = _mlp(spec, 0)
        _set_mlp(network, parameters, x.shape[1])
        probabilities: np.ndarray = network.predict_proba(x)[:, 1]
        return probabilities
    return _sigmoid(x @ parameters[0] + parameters[1][0])


def sklearn_estimator(
    spec: ModelSpec, parameters: Parameters, n_features: int
) -> LogisticRegression | MLPClassifier:
    """A fitted scikit-learn estimator holding ``parameters`` (what the hub exports to ONNX):
    ``LogisticRegression`` for both linear families (SGD with log loss predicts the same
    sigmoid), ``MLPClassifier`` for the MLP."""
    if isinstance(spec, MLPModel):
        network = _mlp(spec, 0)
        _set_mlp(network, parameters, n_features)
        return network
    from sklearn.linear_model import LogisticRegression

    linear = LogisticRegression()
    linear.classes_ = np.array([0, 1])
    linear.coef_ = np.asarray(parameters[0], dtype=np.float64)[None, :]
    linear.intercept_ = np.asarray(parameters[1], dtype=np.float64)
    linear.n_features_in_ = n_features
    linear.n_iter_ = np.array([0])
    return linear


def _sigmoid(z: np.ndarray) -> np.ndarray:
    result: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic
    return result


def _gradient_steps(
    spec: LogisticRegressionModel,
    parameters: Parameters,
    x: np.ndarray,
    y: np.ndarray,
    proximal_mu: float,
) -> Parameters:
    global_coef, global_intercept = parameters[0], parameters[1]
    coef, intercept = global_coef.copy(), global_intercept.copy()
    for _ in range(spec.local_steps):
        residual = _sigmoid(x @ coef + intercept[0]) - y
        gradient_coef = x.T @ residual / len(y) + spec.l2 * coef
        gradient_intercept = np.array([residual.mean()])
        if proximal_mu:
            gradient_coef = gradient_coef + proximal_mu * (coef - global_coef)
            gradient_intercept = gradient_intercept + proximal_mu * (intercept - global_intercept)
        coef = coef - spec.learning_rate * gradient_coef
        intercept = intercept - spec.learning_rate * gradient_intercept
    return [coef, intercept]


def _mlp(spec: ModelSpec, seed: int, *, warm: bool = False) -> MLPClassifier:
    from sklearn.neural_network import MLPClassifier

    assert isinstance(spec, MLPModel)
    return MLPClassifier(
        hidden_layer_sizes=spec.hidden_layers,
        solver="adam",
        learning_rate_init=spec.learning_rate,
        alpha=spec.alpha,
        batch_size=spec.batch_size,
        max_iter=spec.local_epochs,
        # Exactly the plan's local epochs (FedAvg's E passes per round): scikit-learn would
        # stop once the training loss improved by less than tol for n_iter_no_change epochs
        # (by default 1e-4 and 10), whatever the plan's epochs.
        tol=0.0,
        n_iter_no_change=spec.local_epochs,
        # Each round starts from the global network: warm_start keeps the weights we set
        # (a new Adam state each round, as in FedAvg with local optimisers).
        warm_start=warm,
        random_state=seed,
    )


def _initialise_mlp(network: MLPClassifier, n_features: int) -> None:
    """scikit-learn's own initialisation of a binary MLP for ``n_features`` inputs, without
    fitting it to any row (private API: ``MLPClassifier`` has no public way to do this)."""
    from sklearn.preprocessing import LabelBinarizer

    binarizer = LabelBinarizer().fit([0, 1])
    network._label_binarizer = binarizer
    network.classes_ = binarizer.classes_
    network.n_features_in_ = n_features
    layer_units = [n_features, *network.hidden_layer_sizes, 1]
    network._random_state = np.random.RandomState(network.random_state)
    network._initialize(np.zeros((1, 1)), layer_units, np.float64)


def _set_mlp(network: MLPClassifier, parameters: Parameters, n_features: int) -> None:
    _initialise_mlp(network, n_features)
    layers = len(parameters) // 2
    network.coefs_ = [np.array(array, dtype=np.float64) for array in parameters[:layers]]
    network.intercepts_ = [np.array(array, dtype=np.float64) for array in parameters[layers:]]
