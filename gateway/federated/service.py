"""Answers aggregate requests from the findings index, through the disclosure control.

For every request: find who is behind it (the cohort's membership), refuse it if it is too
close to a cohort answered before (:mod:`.differencing`), answer it from the answer cache if the
same aggregate of the same membership was answered before (under DP), else compute it, suppress
small cells (:mod:`.disclosure`), add noise and charge the client's budget (:mod:`.privacy`),
and write it to the audit log (:mod:`.audit`). The answer holds aggregates only.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from gateway.federated.audit import AUDIT_FILE_NAME, AuditLog
from gateway.federated.cells import cell_definition, cell_memberships, fixed_values
from gateway.federated.cohort import (
    AggregateRequest,
    BinnedDimension,
    CategoryDimension,
    CountSpec,
    CrossTabSpec,
    Dimension,
    HistogramSpec,
    SummarySpec,
)
from gateway.federated.differencing import DifferencingGuard, DifferencingRefused, Membership
from gateway.federated.disclosure import (
    OTHER,
    Cell,
    CellKey,
    complete,
    merge_rare_categories,
    suppress,
)
from gateway.federated.facts import Facts, category, cell_codes
from gateway.federated.privacy import AnswerCache, BudgetExhausted, NoiseMechanism, PrivacyLedger
from gateway.federated.query import (
    OUTSIDE,
    cells_sql,
    facts_sql,
    joins_imply_findings,
    membership_sql,
    values_sql,
)
from gateway.federated.settings import FederatedSettings
from gateway.federated.sorted_sets import distinct_per_group
from gateway.index import FindingsIndex

log = structlog.get_logger(__name__)

QUANTILE_BINS = 64
#: The cell of values outside a binned dimension's range (or missing), as answers name it.
OUTSIDE_LABEL = "(outside)"


class RequestError(ValueError):
    """A request that cannot be answered as asked (400); ``field`` names the part at fault."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Refused(Exception):
    """Disclosure control refuses to answer (403): differencing or budget."""


class FederatedService:
    def __init__(self, index: FindingsIndex, settings: FederatedSettings):
        self.index = index
        self.settings = settings
        self.k = settings.min_cell_size
        database = index.database
        self.guard = DifferencingGuard(database, settings.differencing, self.k)
        self.ledger = PrivacyLedger(database, settings.dp)
        self.cache = AnswerCache(database)
        self.noise = NoiseMechanism(settings.dp)
        audit_path = settings.audit_log or Path(index.data_dir) / AUDIT_FILE_NAME
        self.audit = AuditLog(audit_path, fsync=settings.audit_fsync)
        self._lock = threading.Lock()

    @property
    def dp_enabled(self) -> bool:
        return self.settings.dp.enabled

    # -- the one entry point ----------------------------------------------------------------

    def answer(self, request: AggregateRequest, client: str, endpoint: str) -> dict[str, Any]:
        """The released answer, or RequestError (400) / Refused (403). Always audited."""
        audit: dict[str, Any] = {
            "client": client,
            "endpoint": endpoint,
            "request": request.model_dump(mode="json", exclude_defaults=False),
        }
        try:
            self._validate(request)
            # One question at a time from guard check to history record: two near-identical
            # questions sent at once must not both pass the guard before either is recorded.
            # Across gateway replicas sharing a PostgreSQL index, too.
            with self._lock, self.index.database.exclusive("fedgate-federated-answer"):
                answer, spent, cached = self._answer(request, client)
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

    def _validate(self, request: AggregateRequest) -> None:
        spec = request.aggregate
        cells = 1
        for dimension in _dimensions(request):
            if isinstance(dimension, BinnedDimension):
                cells *= dimension.bin_count
                if dimension.bin_count > self.settings.max_bins:
                    raise RequestError(
                        "aggregate",
                        f"{dimension.bin_count} bins asked for; at "
                        f"most {self.settings.max_bins} are answered",
                    )
        if isinstance(spec, SummarySpec) and spec.quantiles and not self.dp_enabled:
            raise RequestError(
                "aggregate.quantiles",
                "quantiles are answered only under "
                "differential privacy (an exact quantile is one patient's value)",
            )

    def _answer(self, request: AggregateRequest, client: str) -> tuple[dict[str, Any], float, bool]:
        membership, facts = self._membership(request)
        definition = json.dumps(request.cohort.definition(), sort_keys=True)
        try:
            seen_before = self.guard.check(membership, definition)
        except DifferencingRefused as error:
            raise Refused(str(error)) from None
        answer_key = self._answer_key(request, membership)
        spent = 0.0
        cached = False
        if self.dp_enabled:
            earlier = self.cache.get(answer_key)
            if earlier is not None:
                answer, cached = earlier, True
            else:
                epsilon = self.settings.dp.epsilon_per_query
                try:
                    self.ledger.check(client, epsilon)
                except BudgetExhausted as error:
                    raise Refused(str(error)) from None
                answer = self._compute(request, membership, facts, client)
                self.cache.put(answer_key, answer, client)
                self.ledger.charge(client, epsilon, answer_key)
                spent = epsilon
        else:
            answer = self._compute(request, membership, facts, client)
        if not seen_before:
            self.guard.record(membership, definition, client)
        return answer, spent, cached

    def _membership(self, request: AggregateRequest) -> tuple[Membership, Facts | None]:
        """Who is behind the answer; with the fact rows themselves when one query gives both
        (then the table costs no second query): a table over study columns, or over a
        measurement whose join implies the cohort's finding filter."""
        extra = _study_columns(request)
        dimensions = _dimensions(request)
        if extra is None and dimensions and joins_imply_findings(request.cohort, dimensions):
            sql = facts_sql(request.cohort, request.level, dimensions)
            rows = self.index.database.query(sql.text, sql.params)
            facts = Facts.from_rows(rows, len(dimensions), request.level)
            return Membership.from_columns(request.level, facts.units, facts.patients), facts
        sql = membership_sql(request.cohort, request.level, extra or ())
        rows = self.index.database.query(sql.text, sql.params)
        facts = Facts.from_rows(rows, len(extra or ()), request.level)
        membership = Membership.from_columns(request.level, facts.units, facts.patients)
        return membership, facts if extra else None

    def _cells_from_facts(
        self, dimensions: list[Dimension], facts: Facts, bound: int | None
    ) -> list[tuple[Any, ...]]:
        """Per cell (dimension values..., units, patients), keyed as :func:`category` keys
        values; what :func:`cells_sql` counts."""
        if bound is not None:
            facts = _first_facts_per_patient(facts, bound)
        if not len(facts):
            return []
        cells = cell_codes(dimensions, facts)
        codes, unit_counts = distinct_per_group(cells.codes, facts.units)
        _, patient_counts = (
            (codes, unit_counts)  # patient level: the units are the patients
            if facts.units is facts.patients
            else distinct_per_group(cells.codes, facts.patients)
        )
        return [
            (*cells.key(code), unit_count, patient_count)
            for code, unit_count, patient_count in zip(
                codes.tolist(), unit_counts.tolist(), patient_counts.tolist(), strict=True
            )
        ]

    @staticmethod
    def _answer_key(request: AggregateRequest, membership: Membership) -> str:
        digest = hashlib.sha256()
        digest.update(
            json.dumps(
                {"level": request.level, "aggregate": request.aggregate.model_dump(mode="json")},
                sort_keys=True,
            ).encode()
        )
        digest.update(membership.patients.tobytes())
        digest.update(membership.units.tobytes())
        return digest.hexdigest()

    # -- computing ----------------------------------------------------------------------------

    def _compute(
        self, request: AggregateRequest, membership: Membership, facts: Facts | None, client: str
    ) -> dict[str, Any]:
        spec = request.aggregate
        answer: dict[str, Any] = {
            "level": request.level,
            "kind": spec.kind,
            "min_cell_size": self.k,
        }
        if self.dp_enabled:
            answer["privacy"] = {
                "mechanism": self.settings.dp.mechanism,
                "epsilon": self.settings.dp.epsilon_per_query,
            }
        if isinstance(spec, CountSpec):
            answer.update(self._count(request, membership, self.settings.dp.epsilon_per_query))
        elif isinstance(spec, HistogramSpec | CrossTabSpec):
            half = self.settings.dp.epsilon_per_query / 2
            answer["total"] = self._count(request, membership, half)
            answer.update(self._table(request, membership, facts, half, client))
        else:
            answer.update(self._summary(request, membership))
        return answer

    def _suppressed(self) -> dict[str, Any]:
        return {"count": None, "suppressed": True, "bound": f"<{self.k}"}

    def _count(
        self, request: AggregateRequest, membership: Membership, epsilon: float
    ) -> dict[str, Any]:
        if len(membership.patients) < self.k:
            return self._suppressed()
        if not self.dp_enabled:
            return {"count": membership.unit_count}
        if request.level == "patients":
            value, sensitivity = float(len(membership.patients)), 1.0
        else:
            bound = self.settings.dp.max_rows_per_patient
            _, per_patient = np.unique(membership.unit_patients, return_counts=True)
            value, sensitivity = float(np.minimum(per_patient, bound).sum()), float(bound)
        noisy = self.noise.release([value], sensitivity, epsilon)[0]
        return {"count": max(0, round(noisy))}

    def _table(
        self,
        request: AggregateRequest,
        membership: Membership,
        facts: Facts | None,
        epsilon: float,
        client: str,
    ) -> dict[str, Any]:
        dimensions = _dimensions(request)
        bound = self.settings.dp.max_rows_per_patient if self.dp_enabled else None
        if facts is None and self.settings.differencing.enabled:
            # The guard needs who is in each cell: fetch that once and count from it too.
            sql = facts_sql(request.cohort, request.level, dimensions)
            facts = Facts.from_rows(
                self.index.database.query(sql.text, sql.params), len(dimensions), request.level
            )
        if facts is not None:
            rows = self._cells_from_facts(dimensions, facts, bound)
        else:
            sql = cells_sql(request.cohort, request.level, dimensions, bound)
            rows = self.index.database.query(sql.text, sql.params)
        axes_fixed = [fixed_values(d) for d in dimensions]
        cells: dict[CellKey, Cell] = {}
        for row in rows:
            key = tuple(category(v) for v in row[: len(dimensions)])
            if any(
                fixed is not None and value not in fixed
                for fixed, value in zip(axes_fixed, key, strict=True)
            ):
                continue
            cells[key] = Cell(float(row[-2]), int(row[-1]))
        open_axes = [fixed is None for fixed in axes_fixed]
        cells, merged = merge_rare_categories(cells, open_axes, self.k)
        axes_values: list[list[Hashable]] = []
        for axis, fixed in enumerate(axes_fixed):
            if fixed is not None:
                axes_values.append(list(fixed))
            else:
                seen = sorted({key[axis] for key in cells if key[axis] != OTHER}, key=str)
                axes_values.append([*seen, OTHER])
        complete(cells, axes_values)
        suppress(cells, self.k)
        if len(membership.patients) < self.k:
            for cell in cells.values():
                cell.suppressed = True
        elif self.settings.differencing.enabled:
            self._guard_cells(request, dimensions, cells, merged, membership, facts, client)
        ordered = sorted(
            cells,
            key=lambda key: tuple(axes_values[axis].index(value) for axis, value in enumerate(key)),
        )
        released = [cells[key].count for key in ordered]
        if self.dp_enabled:
            released = self.noise.release(
                released, float(self.settings.dp.max_rows_per_patient), epsilon
            )
        result_cells = []
        for key, value in zip(ordered, released, strict=True):
            labels = [_label(d, v) for d, v in zip(dimensions, key, strict=True)]
            entry: dict[str, Any] = (
                {"value": labels[0]}
                if len(labels) == 1
                else {"row": labels[0], "column": labels[1]}
            )
            if cells[key].suppressed:
                # No "<k" bound on cells: a cell suppressed to protect another holds k or
                # more, and saying which cells are which would point at the small ones.
                entry.update(count=None, suppressed=True)
            else:
                entry["count"] = max(0, round(value)) if self.dp_enabled else int(value)
            result_cells.append(entry)
        return {
            "dimensions": [d.model_dump(mode="json") for d in dimensions],
            "cells": result_cells,
        }

    def _guard_cells(
        self,
        request: AggregateRequest,
        dimensions: list[Dimension],
        cells: dict[CellKey, Cell],
        merged: list[set[Hashable]],
        membership: Membership,
        facts: Facts | None,
        client: str,
    ) -> None:
        """Withhold every cell too close to a cohort or cell answered before (any client),
        then suppress again around the withheld ones; remember the cells released."""
        assert facts is not None  # fetched by _table whenever the guard is on
        members = cell_memberships(request.level, dimensions, facts, merged)
        withheld = False
        for key in sorted(cells, key=str):
            cell, found = cells[key], members.get(key)
            if cell.suppressed or found is None or _same_members(found, membership):
                continue  # a cell that is the whole cohort says nothing the total does not
            definition = cell_definition(request.cohort, request.level, dimensions, key)
            try:
                seen_before = self.guard.check(found, definition)
            except DifferencingRefused:
                cell.withheld = withheld = True
                continue
            if not seen_before:
                self.guard.record(found, definition, client)
        if withheld:
            suppress(cells, self.k)

    def _summary(self, request: AggregateRequest, membership: Membership) -> dict[str, Any]:
        spec = request.aggregate
        assert isinstance(spec, SummarySpec)
        dimension = BinnedDimension(
            of=spec.of,
            concept=spec.concept,
            unit=spec.unit,
            start=spec.lower,
            stop=spec.upper,
            width=spec.upper - spec.lower,
        )
        sql = values_sql(request.cohort, request.level, dimension)
        rows = self.index.database.query(sql.text, sql.params)
        patients = np.array([int(r[1]) for r in rows], dtype=np.int64)
        values = np.clip(
            np.array([float(r[2]) for r in rows], dtype=np.float64), spec.lower, spec.upper
        )
        result: dict[str, Any] = {
            "of": spec.of,
            "concept": spec.concept,
            "unit": spec.unit,
            "lower": spec.lower,
            "upper": spec.upper,
        }
        if len(np.unique(patients)) < self.k or len(membership.patients) < self.k:
            result.update(n=None, mean=None, sd=None, suppressed=True, bound=f"<{self.k}")
            return result
        if not self.dp_enabled:
            result.update(
                n=len(values),
                mean=float(values.mean()),
                sd=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            )
            return result
        values = values[_first_rows_per_patient(patients, self.settings.dp.max_rows_per_patient)]
        bound = float(self.settings.dp.max_rows_per_patient)
        parts = 4 if spec.quantiles else 3
        epsilon = self.settings.dp.epsilon_per_query / parts
        magnitude = max(abs(spec.lower), abs(spec.upper))
        n = max(1.0, self.noise.release([float(len(values))], bound, epsilon)[0])
        total = self.noise.release([float(values.sum())], bound * magnitude, epsilon)[0]
        squares = self.noise.release([float((values**2).sum())], bound * magnitude**2, epsilon)[0]
        mean = min(spec.upper, max(spec.lower, total / n))
        variance = max(0.0, squares / n - mean**2)
        result.update(n=max(0, round(n)), mean=mean, sd=math.sqrt(variance))
        if spec.quantiles:
            edges = np.linspace(spec.lower, spec.upper, QUANTILE_BINS + 1)
            counts, _ = np.histogram(values, bins=edges)
            noisy = np.maximum(0.0, self.noise.release(list(counts.astype(float)), bound, epsilon))
            cumulative = np.cumsum(noisy) / max(noisy.sum(), 1e-9)
            result["quantiles"] = {
                str(q): float(edges[min(int(np.searchsorted(cumulative, q)) + 1, QUANTILE_BINS)])
                for q in spec.quantiles
            }
        return result


#: Dimensions that are columns of the study row itself.
_STUDY_COLUMN = {"sex": "s.patient_sex", "study_year": "s.study_year", "age": "s.age_years"}


def _dimensions(request: AggregateRequest) -> list[Dimension]:
    """A table's dimensions (none for a count or a summary)."""
    spec = request.aggregate
    if isinstance(spec, HistogramSpec):
        return [spec.by]
    if isinstance(spec, CrossTabSpec):
        return [spec.rows, spec.columns]
    return []


def _study_columns(request: AggregateRequest) -> list[str] | None:
    """The study columns of a table's dimensions, or None if any dimension needs a join."""
    dimensions = _dimensions(request)
    if not dimensions:
        return None
    columns = []
    for dimension in dimensions:
        name = dimension.name if isinstance(dimension, CategoryDimension) else dimension.of
        if name not in _STUDY_COLUMN:
            return None
        columns.append(_STUDY_COLUMN[name])
    return columns


def _first_facts_per_patient(facts: Facts, bound: int) -> Facts:
    """The distinct facts, a patient's first ``bound`` of them in the order :func:`cells_sql`
    ranks them (by unit, then the dimension values), which bounds one patient's influence."""
    rows = sorted(
        set(zip(facts.units.tolist(), facts.patients.tolist(), *facts.columns, strict=True)),
        key=lambda r: (r[1], r[0], *((v is None, type(v).__name__, v) for v in r[2:])),
    )
    kept, previous, rank = [], None, 0
    for row in rows:
        rank = rank + 1 if row[1] == previous else 1
        previous = row[1]
        if rank <= bound:
            kept.append(row)
    return Facts.from_rows(kept, len(facts.columns), "studies")  # rows of (unit, patient, ...)


def _first_rows_per_patient(patients: np.ndarray, bound: int) -> np.ndarray:
    """Indices keeping at most ``bound`` rows of each patient (bounds the sensitivity)."""
    seen: dict[int, int] = {}
    keep = []
    for index, patient in enumerate(patients.tolist()):
        seen[patient] = seen.get(patient, 0) + 1
        if seen[patient] <= bound:
            keep.append(index)
    return np.array(keep, dtype=np.int64)


def _same_members(a: Membership, b: Membership) -> bool:
    return np.array_equal(a.patients, b.patients) and np.array_equal(a.units, b.units)


def _label(dimension: Dimension, value: Hashable) -> Any:
    if isinstance(dimension, CategoryDimension) or value == OTHER:
        return value
    assert isinstance(value, int)
    if value == OUTSIDE:
        return OUTSIDE_LABEL
    low = dimension.start + value * dimension.width
    return {"low": low, "high": min(low + dimension.width, dimension.stop)}
