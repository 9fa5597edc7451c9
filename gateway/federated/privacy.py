"""Differential privacy: noise from OpenDP, a persisted per-client budget, one draw per answer.

OpenDP's mechanisms (``make_laplace``, ``make_gaussian``) add calibrated noise; each mechanism is
built for the sensitivity of what it releases and its privacy map is checked against the
epsilon charged, so the guarantee is OpenDP's, not arithmetic of ours. OpenDP's own odometers
keep the spent budget in memory only; the ledger here persists it in the index database, so a
restart or a second replica does not refill anyone's budget.

Repetition gives no averaging: an answer is cached under a key made of the aggregate and the
cohort's *membership* (who is behind it), not the query text, and any client asking a question
with the same membership and aggregate later gets the first draw back, free of charge.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import opendp.prelude as dp

from gateway.federated.settings import DifferentialPrivacySettings
from gateway.index.database import Database

dp.enable_features("contrib")


class BudgetExhausted(Exception):
    """The client has spent its privacy budget."""


class NoiseMechanism:
    """Adds Laplace or Gaussian noise to a vector of numbers, for a sensitivity and epsilon."""

    def __init__(self, settings: DifferentialPrivacySettings):
        self.settings = settings

    def release(self, values: Sequence[float], sensitivity: float, epsilon: float) -> list[float]:
        """``values`` with noise such that the release is (epsilon[, delta])-DP when one
        patient changes the vector by at most ``sensitivity`` (L1 for Laplace, L2 Gaussian)."""
        if not values:
            return []
        data = [float(v) for v in values]
        if self.settings.mechanism == "laplace":
            space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
            measurement = space >> dp.m.then_laplace(scale=sensitivity / epsilon)
            if measurement.map(sensitivity) > epsilon * (1 + 1e-9):
                raise AssertionError("Laplace scale does not give the epsilon charged")
            return [float(v) for v in measurement(data)]
        delta = self.settings.delta
        space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)

        def gaussian(scale: float) -> Any:
            return dp.c.make_fix_delta(
                dp.c.make_zCDP_to_approxDP(space >> dp.m.then_gaussian(scale=scale)), delta
            )

        scale = dp.binary_search_param(gaussian, d_in=sensitivity, d_out=(epsilon, delta))
        return [float(v) for v in gaussian(scale)(data)]


class PrivacyLedger:
    """Each client's spent epsilon, in the index database (table ``privacy_ledger``)."""

    def __init__(self, database: Database, settings: DifferentialPrivacySettings):
        self.database = database
        self.settings = settings

    def spent(self, client: str) -> float:
        rows = self.database.query(
            "SELECT COALESCE(SUM(epsilon), 0) FROM privacy_ledger WHERE client = ?", (client,)
        )
        return float(rows[0][0])

    def remaining(self, client: str) -> float:
        return max(0.0, self.settings.epsilon_budget_per_client - self.spent(client))

    def check(self, client: str, epsilon: float) -> None:
        if self.spent(client) + epsilon > self.settings.epsilon_budget_per_client + 1e-12:
            raise BudgetExhausted(
                f"privacy budget spent: client {client!r} has used "
                f"{self.spent(client):.3g} of epsilon {self.settings.epsilon_budget_per_client:g}"
                f"; this answer needs {epsilon:g}"
            )

    def charge(self, client: str, epsilon: float, answer_key: str) -> None:
        delta = self.settings.delta if self.settings.mechanism == "gaussian" else 0.0
        self.database.execute(
            "INSERT INTO privacy_ledger (client, spent_at, epsilon, delta, answer_key) "
            "VALUES (?, ?, ?, ?, ?)",
            (client, dt.datetime.now(dt.UTC).isoformat(), epsilon, delta, answer_key),
        )


class AnswerCache:
    """Released answers by answer key (aggregate + cohort membership), shared by all clients."""

    def __init__(self, database: Database):
        self.database = database

    def get(self, answer_key: str) -> dict[str, Any] | None:
        rows = self.database.query(
            "SELECT answer FROM answer_cache WHERE answer_key = ?", (answer_key,)
        )
        return json.loads(rows[0][0]) if rows else None

    def put(self, answer_key: str, answer: dict[str, Any], client: str) -> None:
        self.database.execute(
            "INSERT INTO answer_cache (answer_key, answer, first_client, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (answer_key) DO NOTHING",
            (answer_key, json.dumps(answer), client, dt.datetime.now(dt.UTC).isoformat()),
        )
