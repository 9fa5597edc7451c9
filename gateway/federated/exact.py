"""Exact answers, for the ``exact`` role only: minimum cell size and complementary suppression.

Exact aggregates cannot be protected against an analyst who may ask without limit (Denning's
tracker: total - women - men = the one other); docs/privacy.md says so. What is kept here are
the defences that do not depend on who asks how often: a count or cell of fewer than ``k``
distinct patients (0 included) is suppressed; in every line of a table with a suppressed cell,
more cells are suppressed until the hidden ones cannot be recovered from the line's total
(:func:`~gateway.federated.disclosure.suppress`); a value of an open category (finding types,
modalities, years...) held by fewer than ``k`` distinct patients is never named: it is merged
into ``(other)``, whose size is its distinct patients, never the sum of its values' patients.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from gateway.federated.cohort import AggregateRequest, BinnedDimension, SummarySpec
from gateway.federated.disclosure import OTHER, Cell, CellKey, suppress
from gateway.federated.facts import Facts, category, cell_codes
from gateway.federated.membership import Membership
from gateway.federated.query import values_sql
from gateway.federated.sorted_sets import distinct_per_group
from gateway.federated.tables import (
    cell_entry,
    cohort_membership,
    dimensions_of,
    fixed_values,
    grid,
    table_facts,
)
from gateway.federated.vocabulary import VocabularyFacts, vocabulary_lists
from gateway.index import FindingsIndex


def suppressed_count(k: int) -> dict[str, Any]:
    return {"count": None, "suppressed": True, "bound": f"<{k}"}


def exact_count(membership: Membership, k: int) -> dict[str, Any]:
    if len(membership.patients) < k:
        return suppressed_count(k)
    return {"count": membership.unit_count}


def exact_table(
    index: FindingsIndex,
    request: AggregateRequest,
    membership: Membership | Callable[[], Membership],
    k: int,
) -> dict[str, Any]:
    """The table's cells and total. ``membership``: the cohort's, or the query that gives it,
    run only when the fact rows do not (:func:`~gateway.federated.tables.cohort_membership`)."""
    dimensions = dimensions_of(request)
    facts = table_facts(index, request)
    if not isinstance(membership, Membership):
        membership = cohort_membership(request, facts, membership)
    fixed = [fixed_values(d) for d in dimensions]
    merged = [
        set() if axis_fixed is not None else _rare_values(facts, axis, k)
        for axis, axis_fixed in enumerate(fixed)
    ]
    cells: dict[CellKey, Cell] = {}
    seen: list[set[Hashable]] = [set() for _ in dimensions]
    if len(facts):
        codes = cell_codes(dimensions, facts, merged, fixed)
        valid = codes.valid
        cell_of_row = codes.codes[valid]
        units, unit_counts = distinct_per_group(cell_of_row, facts.unit_ranks.ranks[valid])
        _, patient_counts = distinct_per_group(cell_of_row, facts.patient_ranks.ranks[valid])
        for code, unit_count, patient_count in zip(
            units.tolist(), unit_counts.tolist(), patient_counts.tolist(), strict=True
        ):
            key = codes.key(code)
            cells[key] = Cell(float(unit_count), int(patient_count))
            for axis, value in enumerate(key):
                seen[axis].add(value)
    axes_values: list[list[Hashable]] = [
        list(axis_fixed)
        if axis_fixed is not None
        else [*sorted(seen[axis] - {OTHER}, key=str), OTHER]
        for axis, axis_fixed in enumerate(fixed)
    ]
    ordered = grid(axes_values)
    for key in ordered:
        cells.setdefault(key, Cell(0, 0))
    suppress(cells, k)
    if len(membership.patients) < k:
        for cell in cells.values():
            cell.suppressed = True
    released = []
    for key in ordered:
        entry = cell_entry(dimensions, key)
        if cells[key].suppressed:
            # No "<k" bound on cells: a cell suppressed to protect another holds k or more,
            # and saying which cells are which would point at the small ones.
            entry.update(count=None, suppressed=True)
        else:
            entry["count"] = int(cells[key].count)
        released.append(entry)
    return {
        "total": exact_count(membership, k),
        "dimensions": [d.model_dump(mode="json") for d in dimensions],
        "cells": released,
    }


def _rare_values(facts: Facts, axis: int, k: int) -> set[Hashable]:
    """The values of an open axis held by fewer than ``k`` distinct patients."""
    raw_values, raw_codes = facts.encoded(axis)
    # Values that key alike (None and "(unknown)", 3.0 and 3) count their patients together.
    keyed = [category(v) for v in raw_values]
    position = {key: n for n, key in enumerate(dict.fromkeys(keyed))}
    lookup = np.array([position[key] for key in keyed], dtype=np.int64)
    found, patients = distinct_per_group(lookup[raw_codes], facts.patient_ranks.ranks)
    names = list(position)
    return {
        names[code]
        for code, count in zip(found.tolist(), patients.tolist(), strict=True)
        if count < k
    }


def exact_vocabulary(facts: VocabularyFacts, k: int) -> dict[str, Any]:
    """The values held by at least ``k`` distinct patients, with their exact count; rarer
    values are not named at all (as an open category's rare values never are)."""
    released = {key: {"count": n} for key, n in facts.counts().items() if n >= k}
    return {"vocabulary": vocabulary_lists(released)}


def exact_summary(
    index: FindingsIndex, request: AggregateRequest, membership: Membership, k: int
) -> dict[str, Any]:
    spec = request.aggregate
    assert isinstance(spec, SummarySpec)
    values, patients = summary_values(index, request)
    result = summary_header(spec)
    if len(np.unique(patients)) < k or len(membership.patients) < k:
        result.update(n=None, mean=None, sd=None, suppressed=True, bound=f"<{k}")
        return result
    result.update(
        n=len(values),
        mean=float(values.mean()),
        sd=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
    )
    return result


def summary_header(spec: SummarySpec) -> dict[str, Any]:
    return {
        "of": spec.of,
        "concept": spec.concept,
        "unit": spec.unit,
        "lower": spec.lower,
        "upper": spec.upper,
    }


def summary_values(
    index: FindingsIndex, request: AggregateRequest
) -> tuple[np.ndarray, np.ndarray]:
    """The clamped values behind a summary (one per unit, per finding for measurements), and
    the patient of each."""
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
    rows = index.analytic_query(sql.text, sql.params)
    patients = np.array([int(r[1]) for r in rows], dtype=np.int64)
    values = np.clip(
        np.array([float(r[2]) for r in rows], dtype=np.float64), spec.lower, spec.upper
    )
    return values, patients
