"""Answers aggregate requests from the findings index, through the disclosure control.

Who asks decides how an answer is made (docs/privacy.md):

- the ``query`` role (analysts, directly or through a hub) gets noisy answers
  (:mod:`.noisy`): every number differentially private, charged to the *person* asking and to
  the site's budget, the same question answered with the same draw for one period;
- the ``exact`` role (the site's own research office) gets exact answers with minimum cell size
  and complementary suppression (:mod:`.exact`), up to a number of questions per period.

A question is refused only for reasons that do not depend on the data: it is malformed, not
allowed for the role, or the budget is spent; budget and cost are known before the data is
looked at. Every question, refused or answered, is written to the audit log with its cost.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.federated.audit import AUDIT_FILE_NAME, AuditLog
from gateway.federated.cohort import (
    AggregateRequest,
    BinnedDimension,
    CountSpec,
    CrossTabSpec,
    HistogramSpec,
    SummarySpec,
    VocabularySpec,
)
from gateway.federated.exact import exact_count, exact_summary, exact_table, exact_vocabulary
from gateway.federated.facts import Facts
from gateway.federated.membership import Membership
from gateway.federated.noisy import NoisyAnswers
from gateway.federated.privacy import AnswerCache, BudgetExhausted, PrivacyLedger
from gateway.federated.query import membership_sql
from gateway.federated.settings import FederatedSettings
from gateway.federated.tables import dimensions_of
from gateway.federated.vocabulary import vocabulary_facts
from gateway.index import FindingsIndex

log = structlog.get_logger(__name__)

#: Ledger keys of exact answers start with this (epsilon 0: they count questions).
EXACT_KEY_PREFIX = "exact:"


class RequestError(ValueError):
    """A request that cannot be answered as asked (400); ``field`` names the part at fault."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Refused(Exception):
    """Not answered, for a reason that does not depend on the data (403): the role, or the
    budget of the person or of the site."""


@dataclass(frozen=True)
class Asker:
    """Who asks: the person whose budget is charged, the credential they used, their mode."""

    person: str
    credential: str
    exact: bool = False


class FederatedService:
    def __init__(self, index: FindingsIndex, settings: FederatedSettings):
        self.index = index
        self.settings = settings
        self.k = settings.min_cell_size
        database = index.database
        self.ledger = PrivacyLedger(database, settings.dp)
        self.cache = AnswerCache(database, settings.dp.period_days)
        self.noisy = NoisyAnswers(index, settings.dp)
        audit_path = settings.audit_log or Path(index.data_dir) / AUDIT_FILE_NAME
        self.audit = AuditLog(audit_path, fsync=settings.audit_fsync)
        self._lock = threading.Lock()

    # -- the entry points ---------------------------------------------------------------------

    def answer(self, request: AggregateRequest, asker: Asker, endpoint: str) -> dict[str, Any]:
        """The released answer, or RequestError (400) / Refused (403). Always audited."""
        audit: dict[str, Any] = {
            "client": asker.credential,
            "person": asker.person,
            "mode": "exact" if asker.exact else "dp",
            "endpoint": endpoint,
            "request": request.model_dump(mode="json", exclude_defaults=False),
        }
        try:
            self._validate(request, asker)
            # One question at a time from budget check to charge, across gateway replicas
            # sharing a PostgreSQL index too: two questions sent at once must not both pass
            # the check against the same remaining budget.
            with self._lock, self.index.database.exclusive("fedgate-federated-answer"):
                if asker.exact:
                    answer, spent, cached = self._exact(request, asker), 0.0, False
                else:
                    answer, spent, cached = self._noisy(request, asker)
        except (RequestError, Refused) as error:
            audit.update(
                status="refused" if isinstance(error, Refused) else "invalid",
                reason=str(error),
                epsilon_spent=0.0,
            )
            self.audit.record(**audit)
            raise
        audit.update(status="answered", answer=answer, epsilon_spent=spent, cached=cached)
        self.audit.record(**audit)
        return answer

    def cost(self, request: AggregateRequest, asker: Asker) -> dict[str, Any]:
        """What ``request`` would cost ``asker`` now, and what they have: no look at the data."""
        self._validate(request, asker)
        if asker.exact:
            used = self._exact_questions(asker)
            limit = self.settings.exact.max_answers_per_person
            return {
                "mode": "exact",
                "questions_used": used,
                "questions_remaining": max(0, limit - used),
                "period_days": self.settings.exact.period_days,
            }
        cached = self.cache.get(self._question_key(request)) is not None
        epsilon = 0.0 if cached else self.settings.dp.epsilon_per_query
        budget = self.ledger.budget(asker.person)
        return {
            "mode": "dp",
            "epsilon": epsilon,
            "cached": cached,
            "affordable": epsilon <= min(budget.remaining, budget.site_remaining) + 1e-9,
            "budget": budget.as_json(),
        }

    def budget(self, asker: Asker) -> dict[str, Any]:
        """The person's budget (``GET /budget``)."""
        dp = self.settings.dp
        if asker.exact:
            used = self._exact_questions(asker)
            return {
                "mode": "exact",
                "differential_privacy": False,
                "person": asker.person,
                "questions_used": used,
                "questions_remaining": max(0, self.settings.exact.max_answers_per_person - used),
                "period_days": self.settings.exact.period_days,
            }
        return {
            "mode": "dp",
            "differential_privacy": True,
            "mechanism": dp.mechanism,
            "epsilon_per_query": dp.epsilon_per_query,
            "epsilon_per_person": dp.epsilon_per_person,
            "epsilon_per_site": dp.epsilon_per_site,
            **self.ledger.budget(asker.person).as_json(),
        }

    # -- checks that do not look at the data --------------------------------------------------

    def _validate(self, request: AggregateRequest, asker: Asker) -> None:
        spec = request.aggregate
        for dimension in dimensions_of(request):
            if (
                isinstance(dimension, BinnedDimension)
                and dimension.bin_count > self.settings.max_bins
            ):
                raise RequestError(
                    "aggregate",
                    f"{dimension.bin_count} bins asked for; at most "
                    f"{self.settings.max_bins} are answered",
                )
        if asker.exact and isinstance(spec, SummarySpec) and spec.quantiles:
            raise RequestError(
                "aggregate.quantiles",
                "quantiles are answered only with noise (the query role): an exact quantile "
                "is one patient's value",
            )
        if not asker.exact and not self.settings.dp.enabled:
            raise Refused(
                "this site answers only the exact role (federated.dp.enabled is false); "
                "noisy answers for the query role are switched off"
            )

    def _exact_questions(self, asker: Asker) -> int:
        return self.ledger.count_since(
            asker.person, self.settings.exact.period_days, EXACT_KEY_PREFIX
        )

    def _question_key(self, request: AggregateRequest) -> str:
        """The question in canonical form: the same for a reworded or reordered question
        with the same meaning, and never dependent on the data (docs/privacy.md)."""
        question = {
            "level": request.level,
            "aggregate": request.aggregate.model_dump(mode="json"),
            "cohort": request.cohort.definition(),
            "epsilon": self.settings.dp.epsilon_per_query,
            "mechanism": self.settings.dp.mechanism,
        }
        return hashlib.sha256(json.dumps(question, sort_keys=True).encode()).hexdigest()

    # -- answering ----------------------------------------------------------------------------

    def _noisy(self, request: AggregateRequest, asker: Asker) -> tuple[dict[str, Any], float, bool]:
        key = self._question_key(request)
        earlier = self.cache.get(key)
        dp = self.settings.dp
        if earlier is not None:
            answer, spent, cached = earlier, 0.0, True
        else:
            try:
                self.ledger.check(asker.person, dp.epsilon_per_query)
            except BudgetExhausted as error:
                raise Refused(str(error)) from None
            answer = self._compute_noisy(request)
            self.cache.put(key, answer, asker.person)
            self.ledger.charge(asker.person, dp.epsilon_per_query, self._delta(answer), key)
            spent, cached = dp.epsilon_per_query, False
        released = dict(answer)
        released["privacy"] = {
            "mode": "dp",
            "mechanism": dp.mechanism,
            "epsilon": spent,
            "delta": self._delta(answer) if spent else 0.0,
            "cached": cached,
            "interval_coverage": 0.95,
        }
        released["budget"] = self.ledger.budget(asker.person).as_json()
        return released, spent, cached

    def _delta(self, answer: dict[str, Any]) -> float:
        """The delta an answer spent: the Gaussian mechanism's, plus the threshold's where
        an open category was listed (docs/privacy.md: each adds ``delta``)."""
        return self.noisy.noise.delta + (self.settings.dp.delta if "threshold" in answer else 0.0)

    def _compute_noisy(self, request: AggregateRequest) -> dict[str, Any]:
        spec = request.aggregate
        epsilon = self.settings.dp.epsilon_per_query
        answer: dict[str, Any] = {"level": request.level, "kind": spec.kind}
        if isinstance(spec, CountSpec):
            answer.update(self.noisy.count(request, self._membership(request), epsilon))
        elif isinstance(spec, HistogramSpec | CrossTabSpec):
            answer.update(self.noisy.table(request, lambda: self._membership(request), epsilon))
        elif isinstance(spec, VocabularySpec):
            facts = vocabulary_facts(self.index, request.cohort)
            answer.update(self.noisy.vocabulary(facts, epsilon))
        else:
            answer.update(self.noisy.summary(request, epsilon))
        return answer

    def _exact(self, request: AggregateRequest, asker: Asker) -> dict[str, Any]:
        limit = self.settings.exact.max_answers_per_person
        if self._exact_questions(asker) >= limit:
            raise Refused(
                f"{asker.person!r} has asked the {limit} exact questions allowed in this "
                f"{self.settings.exact.period_days:g}-day period"
            )
        spec = request.aggregate
        answer: dict[str, Any] = {
            "level": request.level,
            "kind": spec.kind,
            "min_cell_size": self.k,
        }
        if isinstance(spec, CountSpec):
            answer.update(exact_count(self._membership(request), self.k))
        elif isinstance(spec, HistogramSpec | CrossTabSpec):
            answer.update(
                exact_table(self.index, request, lambda: self._membership(request), self.k)
            )
        elif isinstance(spec, VocabularySpec):
            answer.update(exact_vocabulary(vocabulary_facts(self.index, request.cohort), self.k))
        else:
            answer.update(exact_summary(self.index, request, self._membership(request), self.k))
        answer["privacy"] = {"mode": "exact"}
        self.ledger.charge(asker.person, 0.0, 0.0, EXACT_KEY_PREFIX + self._question_key(request))
        return answer

    def _membership(self, request: AggregateRequest) -> Membership:
        """Who is behind the answer: the cohort's (unit, patient) pairs."""
        sql = membership_sql(request.cohort, request.level)
        columns = self.index.analytic_columns(sql.text, sql.params)
        facts = Facts.from_columns(columns, 0, request.level)
        return Membership.from_columns(request.level, facts.units, facts.patients)
