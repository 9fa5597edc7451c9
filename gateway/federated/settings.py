"""Disclosure-control settings of a site (``federated:`` in the gateway's YAML).

These are the knobs a site's data protection officer signs off; docs/federated.md explains
each one and its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DifferentialPrivacySettings(_Strict):
    """Optional noise on every released number, with a per-client budget (OpenDP)."""

    enabled: bool = False
    mechanism: Literal["laplace", "gaussian"] = "laplace"
    #: Privacy loss charged for one answer (split evenly over the numbers it releases).
    epsilon_per_query: Annotated[float, Field(gt=0, le=10)] = 0.5
    #: Total privacy loss a client may spend; past it, queries are refused with 403.
    epsilon_budget_per_client: Annotated[float, Field(gt=0)] = 10.0
    #: The Gaussian mechanism's delta (unused by Laplace).
    delta: Annotated[float, Field(gt=0, lt=1e-3)] = 1e-7
    #: Rows (studies, series, findings) one patient may contribute to a noisy answer: the
    #: sensitivity. A patient's rows beyond this are left out of noisy answers.
    max_rows_per_patient: Annotated[int, Field(ge=1, le=1000)] = 5


class DifferencingGuardSettings(_Strict):
    """Refusal of cohorts that differ from a recent one by fewer than ``min_cell_size``."""

    enabled: bool = True
    #: How far back answered cohorts are compared (all clients together).
    window_days: Annotated[float, Field(gt=0)] = 365.0
    #: At most this many recent cohorts of similar size are compared per query.
    max_compared: Annotated[int, Field(ge=1)] = 1000


class FederatedSettings(_Strict):
    """Aggregates only: minimum cell size, differencing guard, optional DP, audit log."""

    enabled: bool = True
    #: Any count or cell with fewer distinct patients than this is suppressed (0 included).
    min_cell_size: Annotated[int, Field(ge=2, le=1000)] = 10
    dp: DifferentialPrivacySettings = Field(default_factory=DifferentialPrivacySettings)
    differencing: DifferencingGuardSettings = Field(default_factory=DifferencingGuardSettings)
    #: The append-only JSON-lines audit log; default ``<data_dir>/federated-audit.jsonl``.
    audit_log: Path | None = None
    #: fsync the audit log after each line (an answer released is an answer recorded).
    audit_fsync: bool = True
    #: Most bins a numeric histogram may ask for.
    max_bins: Annotated[int, Field(ge=1, le=10_000)] = 200
