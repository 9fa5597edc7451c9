"""Differential privacy: noise from OpenDP, budgets per person and per site, one draw per question.

OpenDP's mechanisms add calibrated noise; each mechanism is built for the sensitivity of what it
releases and its privacy map is checked against the epsilon charged, so the guarantee is
OpenDP's, not arithmetic of ours:

- ``make_laplace`` / ``make_gaussian`` for vectors whose every entry is released (counts, the
  cells of a table whose categories are known in advance, sums);
- ``make_laplace_threshold`` for a table with an open category (finding types, modalities,
  years, ...): which values exist is itself data, so a value is listed only when its noisy
  count clears a threshold set for the ``delta`` configured (Rogers 2023).

OpenDP's own odometers keep the spent budget in memory only; the ledger here persists it in the
index database, so a restart or a second replica does not refill anyone's budget. It charges the
*person* (all their credentials, directly and through any hub), and caps all persons together.

Repetition buys no averaging: a released answer is kept under a key made of the question's
canonical form (:meth:`Cohort.definition`, the level and the aggregate), and the same question
from anyone gets the same draw back, free, for one budget period. The key is deliberately *not*
the cohort's membership: whether two differently worded cohorts hold the same patients is a fact
about the data, and a cache keyed on it would tell it (same draw back = same patients).
Differently worded questions get fresh draws, and each is charged, so averaging them is paid for
by the budget, which is what differential privacy's composition bounds.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Not opendp.prelude: it imports opendp.extras, and with it scikit-learn, scipy, pandas and
# polars, none of which is used here: about 190 MB of the gateway's memory and 3-4 s of its
# start (docs/benchmarks.md, issue 19 item 5).
import opendp.combinators as dpc
import opendp.measurements as dpm
from opendp.domains import atom_domain, map_domain, vector_domain
from opendp.metrics import absolute_distance, l01inf_distance, l1_distance, l2_distance
from opendp.mod import binary_search, binary_search_param, enable_features

from gateway.federated.settings import DifferentialPrivacySettings
from gateway.index.database import Database

enable_features("contrib")

#: Two-sided coverage of the intervals given with noisy numbers.
INTERVAL_COVERAGE = 0.95


class BudgetExhausted(Exception):
    """The person (or the site as a whole) has spent its privacy budget for the period."""


@dataclass(frozen=True)
class Sensitivity:
    """How much one patient can change what is released.

    ``cells`` (l0): how many entries one patient can touch; ``per_cell`` (l-infinity): by how
    much at most in one entry; ``total`` (l1): by how much summed over all entries.
    """

    cells: int
    per_cell: float
    total: float

    @property
    def l2(self) -> float:
        # Spread over `cells` entries of at most `per_cell` each, summing to at most `total`.
        whole, rest = divmod(self.total, self.per_cell)
        return math.sqrt(whole * self.per_cell**2 + rest**2)


@dataclass(frozen=True)
class Noisy:
    """Noisy values with the half-width of their 95 % interval (data-independent)."""

    values: list[float]
    half_width: float


class NoiseMechanism:
    """Adds Laplace or Gaussian noise (OpenDP) for a sensitivity and an epsilon."""

    def __init__(self, settings: DifferentialPrivacySettings):
        self.settings = settings

    @property
    def delta(self) -> float:
        """The delta a release adds to the budget (0 for Laplace)."""
        return self.settings.delta if self.settings.mechanism == "gaussian" else 0.0

    def release(self, values: Sequence[float], sensitivity: Sensitivity, epsilon: float) -> Noisy:
        """``values`` with noise such that the release is (epsilon[, delta])-DP when one patient
        changes the vector by at most ``sensitivity``."""
        data = [float(v) for v in values]
        if self.settings.mechanism == "laplace":
            scale = sensitivity.total / epsilon
            space = vector_domain(atom_domain(T=float, nan=False)), l1_distance(T=float)
            laplace = space >> dpm.then_laplace(scale=scale)
            if laplace.map(sensitivity.total) > epsilon * (1 + 1e-9):
                raise AssertionError("Laplace scale does not give the epsilon charged")
            noisy = [float(v) for v in laplace(data)] if data else []
            return Noisy(noisy, scale * math.log(1 / (1 - INTERVAL_COVERAGE)))
        delta = self.settings.delta
        space = vector_domain(atom_domain(T=float, nan=False)), l2_distance(T=float)

        def gaussian(scale: float) -> Any:
            return dpc.make_fix_delta(
                dpc.make_zCDP_to_approxDP(space >> dpm.then_gaussian(scale=scale)), delta
            )

        scale = binary_search_param(gaussian, d_in=sensitivity.l2, d_out=(epsilon, delta))
        noisy = [float(v) for v in gaussian(scale)(data)] if data else []
        return Noisy(noisy, 1.959964 * scale)

    def release_open(
        self, counts: Mapping[str, float], sensitivity: Sensitivity, epsilon: float
    ) -> tuple[dict[str, float], float, float]:
        """Noisy counts of the keys whose noisy count clears a threshold, the threshold, and the
        interval half-width: (epsilon, delta)-DP although which keys exist is data
        (OpenDP's ``make_laplace_threshold``). Keys below the threshold are not named."""
        scale = sensitivity.total / epsilon
        d_in = (sensitivity.cells, sensitivity.total, sensitivity.per_cell)
        mechanism, threshold = _threshold_mechanism(scale, d_in, self.settings.delta)
        spent_epsilon, spent_delta = mechanism.map(d_in)
        if spent_epsilon > epsilon * (1 + 1e-9) or spent_delta > self.settings.delta * (1 + 1e-9):
            raise AssertionError("threshold mechanism exceeds the budget charged")
        released = mechanism({key: float(value) for key, value in counts.items()}) if counts else {}
        return (
            {str(key): float(value) for key, value in released.items()},
            float(threshold),
            scale * math.log(1 / (1 - INTERVAL_COVERAGE)),
        )


@functools.lru_cache(maxsize=64)
def _threshold_mechanism(
    scale: float, d_in: tuple[int, float, float], delta: float
) -> tuple[Any, float]:
    """OpenDP's threshold mechanism for a noise scale, with the lowest threshold that keeps
    its delta within ``delta`` for ``d_in``. A binary search of about 13 ms: done once per
    (scale, sensitivity, delta), which a site's settings fix."""
    domain = map_domain(atom_domain(T=str), atom_domain(T=float, nan=False))
    metric = l01inf_distance(absolute_distance(T=float))

    def threshold_mechanism(threshold: float) -> Any:
        return dpm.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)

    threshold = binary_search(
        lambda t: threshold_mechanism(t).map(d_in)[1] <= delta,
        bounds=(float(d_in[2]), 1e9),
        T=float,
    )
    return threshold_mechanism(threshold), float(threshold)


@dataclass(frozen=True)
class Budget:
    """What a person has spent and has left in the current period, and what the site has."""

    person: str
    spent: float
    remaining: float
    site_remaining: float
    period_days: float

    def as_json(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "epsilon_spent": round(self.spent, 6),
            "epsilon_remaining": round(self.remaining, 6),
            "site_epsilon_remaining": round(self.site_remaining, 6),
            "period_days": self.period_days,
        }


class PrivacyLedger:
    """Each person's spent epsilon, in the index database (table ``privacy_ledger``, whose
    ``client`` column holds the person), summed over a sliding window of ``period_days``."""

    def __init__(self, database: Database, settings: DifferentialPrivacySettings):
        self.database = database
        self.settings = settings

    def _since(self) -> str:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.settings.period_days)
        return start.isoformat()

    def budget(self, person: str) -> Budget:
        since = self._since()
        rows = self.database.query(
            "SELECT COALESCE(SUM(CASE WHEN client = ? THEN epsilon ELSE 0 END), 0), "
            "COALESCE(SUM(epsilon), 0) FROM privacy_ledger WHERE spent_at >= ?",
            (person, since),
        )
        mine, everyone = float(rows[0][0]), float(rows[0][1])
        return Budget(
            person=person,
            spent=mine,
            remaining=max(0.0, self.settings.epsilon_per_person - mine),
            site_remaining=max(0.0, self.settings.epsilon_per_site - everyone),
            period_days=self.settings.period_days,
        )

    def check(self, person: str, epsilon: float) -> Budget:
        budget = self.budget(person)
        if epsilon > budget.remaining + 1e-9:
            raise BudgetExhausted(
                f"privacy budget spent: {person!r} has {budget.remaining:.3g} of epsilon "
                f"{self.settings.epsilon_per_person:g} left in this {self.settings.period_days:g}"
                f"-day period; this question costs {epsilon:g}"
            )
        if epsilon > budget.site_remaining + 1e-9:
            raise BudgetExhausted(
                f"the site's privacy budget for all analysts together is spent for this "
                f"{self.settings.period_days:g}-day period; this question costs {epsilon:g}"
            )
        return budget

    def charge(self, person: str, epsilon: float, delta: float, answer_key: str) -> None:
        self.database.execute(
            "INSERT INTO privacy_ledger (client, spent_at, epsilon, delta, answer_key) "
            "VALUES (?, ?, ?, ?, ?)",
            (person, dt.datetime.now(dt.UTC).isoformat(), epsilon, delta, answer_key),
        )

    def count_since(self, person: str, days: float, key_prefix: str) -> int:
        """How many entries of ``person`` whose answer key starts with ``key_prefix`` the last
        ``days`` hold (the exact role's question cap is kept in the same ledger, at epsilon 0)."""
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat()
        rows = self.database.query(
            "SELECT COUNT(*) FROM privacy_ledger WHERE client = ? AND spent_at >= ? "
            "AND answer_key LIKE ?",
            (person, since, key_prefix + "%"),
        )
        return int(rows[0][0])


class AnswerCache:
    """Released answers by question key, shared by all persons, served for one period."""

    def __init__(self, database: Database, period_days: float):
        self.database = database
        self.period_days = period_days

    def get(self, answer_key: str) -> dict[str, Any] | None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.period_days)
        rows = self.database.query(
            "SELECT answer FROM answer_cache WHERE answer_key = ? AND created_at >= ?",
            (answer_key, since.isoformat()),
        )
        return json.loads(rows[0][0]) if rows else None

    def put(self, answer_key: str, answer: dict[str, Any], person: str) -> None:
        """Keep ``answer``, replacing one that has expired."""
        self.database.execute("DELETE FROM answer_cache WHERE answer_key = ?", (answer_key,))
        self.database.execute(
            "INSERT INTO answer_cache (answer_key, answer, first_client, created_at) "
            "VALUES (?, ?, ?, ?)",
            (answer_key, json.dumps(answer), person, dt.datetime.now(dt.UTC).isoformat()),
        )
