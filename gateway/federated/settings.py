"""Disclosure-control settings of a site (``federated:`` in the gateway's YAML).

These are the knobs a site's data protection officer signs off; docs/privacy.md states the
threat model they answer and docs/federated.md explains each one and its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DifferentialPrivacySettings(_Strict):
    """Noise on every number released to the ``query`` role, with budgets per person and site.

    The defaults are chosen for an interactive cohort builder on a site of a few thousand
    patients: a count costs 0.75 and is within +-5 of the truth in 97.5 % of draws; twenty
    refinements of a cohort fit in one person's daily budget of 15.
    """

    #: False: the ``query`` role is not answered at all (only ``exact`` clients are). There is
    #: no setting that gives the ``query`` role exact numbers.
    enabled: bool = True
    mechanism: Literal["laplace", "gaussian"] = "laplace"
    #: Privacy loss of one fresh answer, whatever its kind (split over the numbers it releases).
    epsilon_per_query: Annotated[float, Field(gt=0, le=10)] = 0.75
    #: What one person (all their credentials, directly and through every hub) may spend in
    #: any window of ``period_days``; past it, questions are refused (403, before any look at
    #: the data).
    epsilon_per_person: Annotated[float, Field(gt=0)] = 15.0
    #: What all persons together may spend in any window of ``period_days``.
    epsilon_per_site: Annotated[float, Field(gt=0)] = 150.0
    #: The budgets' window (sliding), and how long a released answer is served again free.
    period_days: Annotated[float, Field(gt=0, le=3660)] = 1.0
    #: The Gaussian mechanism's delta, and the delta of the threshold that decides which
    #: values of an open category (finding types, modalities, years...) are listed.
    delta: Annotated[float, Field(gt=0, lt=1e-3)] = 1e-7
    #: Rows (studies, series, findings, cells) one patient may contribute to a noisy answer:
    #: the sensitivity. A patient's rows beyond this are left out of noisy answers.
    max_rows_per_patient: Annotated[int, Field(ge=1, le=1000)] = 5

    @model_validator(mode="after")
    def _budgets_hold_one_answer(self) -> DifferentialPrivacySettings:
        if self.epsilon_per_person < self.epsilon_per_query:
            raise ValueError("epsilon_per_person is smaller than one answer's epsilon_per_query")
        if self.epsilon_per_site < self.epsilon_per_person:
            raise ValueError("epsilon_per_site is smaller than one person's epsilon_per_person")
        return self


class ExactAnswerSettings(_Strict):
    """Limits of the ``exact`` role (the site's own research office): exact counts of at least
    ``min_cell_size`` patients, complementary suppression, and a cap on questions per period,
    the only defence against a tracker that does not depend on the data (docs/privacy.md)."""

    #: Questions one person with the ``exact`` role may ask per ``period_days``.
    max_answers_per_person: Annotated[int, Field(ge=1)] = 500
    period_days: Annotated[float, Field(gt=0, le=3660)] = 1.0


class FederatedSettings(_Strict):
    """Aggregates only: noise for analysts, suppression for exact answers, one audit log."""

    enabled: bool = True
    #: Exact answers: a count or cell with fewer distinct patients than this is suppressed
    #: (0 included).
    min_cell_size: Annotated[int, Field(ge=2, le=1000)] = 10
    dp: DifferentialPrivacySettings = Field(default_factory=DifferentialPrivacySettings)
    exact: ExactAnswerSettings = Field(default_factory=ExactAnswerSettings)
    #: The append-only JSON-lines audit log; default ``<data_dir>/federated-audit.jsonl``.
    audit_log: Path | None = None
    #: fsync the audit log after each line (an answer released is an answer recorded).
    audit_fsync: bool = True
    #: Most bins a numeric histogram may ask for.
    max_bins: Annotated[int, Field(ge=1, le=10_000)] = 200
