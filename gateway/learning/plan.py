"""Training plans: what a federation learns, from which cohort, and how (``plan.yaml``).

A plan is a YAML file. It is identified by the sha256 of its bytes, which is what a site's admin
approves (``fedgate learn approve SHA256``): any change to the file, a comment included, is a
new plan that needs a new approval. Example::

    name: nodule-outcome
    cohort: {attributes: {ModalitiesInStudy: CT}}      # the cohort language (docs/federated.md)
    unit: patient                                      # one row per patient (or per study)
    features:
      - {name: age, source: age}
      - {name: male, source: sex}
      - {name: nodule_diameter, source: measurement, finding_type: "SCT:27925004",
         concept: "SCT:81827009", unit: mm, reduce: max}
      - {name: lvef, source: clinical, concept: "LN:10230-1", unit: "%"}
      - {name: smoker, source: clinical, concept: "SCT:229819007", equals: "SCT:77176002"}
    label: {source: clinical, concept: "LN:75323-6", equals: "SCT:363358000"}
    missing: drop                                      # or impute_mean
    model: {family: logistic_regression, learning_rate: 0.5}
    rounds: 20
    min_sites: 2
    evaluation: {holdout: 0.25, threshold: 0.5}

Every feature and the label are numbers built at the site from its own findings index
(:mod:`gateway.learning.table`); no row, identifier or date ever leaves it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.federated.cohort import Cohort
from tabular.features import (
    AgeFeature,
    ClinicalFeature,
    Feature,
    Label,
    MeasurementFeature,
    PresenceFeature,
    SexFeature,
)

__all__ = [
    "AgeFeature",
    "ClinicalFeature",
    "Evaluation",
    "Feature",
    "Label",
    "LoadedPlan",
    "MeasurementFeature",
    "PlanError",
    "PresenceFeature",
    "SexFeature",
    "TrainingPlan",
    "load_plan",
    "parse_plan",
]

PlanName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LogisticRegressionModel(_Model):
    """Logistic regression trained by full-batch gradient descent: one round is one step on
    every site's whole training table, so FedAvg weighted by n is centralised gradient
    descent on the pooled rows."""

    family: Literal["logistic_regression"]
    learning_rate: Annotated[float, Field(gt=0, le=100)] = 0.5
    l2: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    local_steps: Annotated[int, Field(ge=1, le=1000)] = 1


class SGDModel(_Model):
    """A linear model by stochastic gradient descent (scikit-learn's SGDClassifier, log loss)."""

    family: Literal["sgd"]
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 0.01
    alpha: Annotated[float, Field(ge=0, le=10)] = 1e-4
    local_epochs: Annotated[int, Field(ge=1, le=100)] = 1
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 32


class MLPModel(_Model):
    """A small multi-layer perceptron (scikit-learn's MLPClassifier)."""

    family: Literal["mlp"]
    hidden_layers: tuple[Annotated[int, Field(ge=1, le=1024)], ...] = (16,)
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 1e-3
    alpha: Annotated[float, Field(ge=0, le=10)] = 1e-4
    local_epochs: Annotated[int, Field(ge=1, le=100)] = 1
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 32


ModelSpec = Annotated[LogisticRegressionModel | SGDModel | MLPModel, Field(discriminator="family")]


class Strategy(_Model):
    """FedAvg weighted by each site's number of training rows; FedProx adds a proximal term
    ``mu/2 * ||w - w_global||^2`` to each site's local objective."""

    name: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: Annotated[float, Field(ge=0, le=100)] = 0.0


class DifferentialPrivacy(_Model):
    """Client-side clipping of each site's update to ``clipping_norm`` and Gaussian noise of
    ``noise_multiplier * clipping_norm`` (Flower's client-side fixed clipping)."""

    clipping_norm: Annotated[float, Field(gt=0, le=1e6)]
    noise_multiplier: Annotated[float, Field(ge=0, le=100)]


class Protection(_Model):
    #: Flower's SecAgg+: each site's update leaves it masked; the hub learns only the sum.
    secure_aggregation: bool = False
    differential_privacy: DifferentialPrivacy | None = None

    @model_validator(mode="after")
    def _one_protection_of_updates(self) -> Protection:
        if self.secure_aggregation and self.differential_privacy is not None:
            # Flower 1.42's SecAgg+ drives its legacy strategies, its DP wrappers the new ones.
            raise ValueError(
                "secure_aggregation and differential_privacy cannot be combined (Flower 1.42)"
            )
        return self


class Evaluation(_Model):
    """Each site's held-out split and the figures it returns (aggregates only)."""

    holdout: Annotated[float, Field(gt=0, lt=1)] = 0.25
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    #: Score bins of the per-site counts from which the hub pools a ROC curve.
    score_bins: Annotated[int, Field(ge=10, le=1000)] = 100
    #: Cells of a confusion matrix or calibration decile under this count are merged.
    min_cell: Annotated[int, Field(ge=1, le=1000)] = 5


class TrainingPlan(_Model):
    name: PlanName
    description: Annotated[str, Field(max_length=2000)] = ""
    cohort: Cohort = Field(default_factory=Cohort)
    unit: Literal["patient", "study"] = "patient"
    features: Annotated[tuple[Feature, ...], Field(min_length=1, max_length=256)]
    label: Label
    missing: Literal["drop", "impute_mean"] = "drop"
    model: ModelSpec
    rounds: Annotated[int, Field(ge=1, le=10_000)] = 20
    min_sites: Annotated[int, Field(ge=1, le=1000)] = 2
    strategy: Strategy = Field(default_factory=Strategy)
    protection: Protection = Field(default_factory=Protection)
    evaluation: Evaluation = Field(default_factory=Evaluation)

    @model_validator(mode="after")
    def _distinct_names(self) -> TrainingPlan:
        names = [feature.name for feature in self.features]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"feature names repeat: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _secure_aggregation_quorum(self) -> TrainingPlan:
        if self.protection.secure_aggregation and self.min_sites < 3:
            # With two sites, each could subtract its own update from the sum and read the
            # other's: secure aggregation hides a site only among at least two others.
            raise ValueError("protection.secure_aggregation needs min_sites of at least 3")
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)


class PlanError(ValueError):
    """A plan that cannot be read or is not valid; the message names the field at fault."""


@dataclass(frozen=True)
class LoadedPlan:
    """A plan with its identity: the sha256 of the exact bytes it was read from."""

    plan: TrainingPlan
    sha256: str
    text: str


def parse_plan(data: bytes) -> LoadedPlan:
    """The plan in ``data`` (YAML, UTF-8); :class:`PlanError` says what is wrong."""
    try:
        text = data.decode("utf-8")
        document = yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise PlanError(f"not a YAML document: {error}") from None
    if not isinstance(document, dict):
        raise PlanError("a plan is a YAML mapping (name, cohort, features, label, model, ...)")
    try:
        plan = TrainingPlan.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(plan)"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise PlanError(f"{field}: {message}") from None
    return LoadedPlan(plan=plan, sha256=hashlib.sha256(data).hexdigest(), text=text)


def load_plan(path: Path) -> LoadedPlan:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PlanError(f"cannot read {path}: {error.strerror}") from None
    return parse_plan(data)
