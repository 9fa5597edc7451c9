"""What a table is made of: a cohort's fact rows, the cell of each row, and the cells' keys.

Both kinds of answer start here: the exact one (:mod:`.exact`) counts distinct units and
patients per cell and suppresses; the noisy one (:mod:`.noisy`) bounds each patient's
contribution and adds noise. The dimensions, the fact rows and the labels are shared.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from gateway.federated.cohort import (
    FIXED_CATEGORIES,
    AggregateRequest,
    BinnedDimension,
    CategoryDimension,
    CrossTabSpec,
    Dimension,
    HistogramSpec,
)
from gateway.federated.disclosure import OTHER, CellKey
from gateway.federated.facts import Facts
from gateway.federated.membership import Membership
from gateway.federated.query import OUTSIDE, facts_cover_cohort, facts_sql
from gateway.federated.sorted_sets import first_of_each_run, order_by
from gateway.index import FindingsIndex

#: The cell of values outside a binned dimension's range (or missing), as answers name it.
OUTSIDE_LABEL = "(outside)"

#: Dimensions that describe one study (a patient-level table can place a patient by one of
#: their studies); the others list things a study or patient may have several of.
STUDY_PROPERTIES = frozenset({"sex", "age", "study_year"})


def dimensions_of(request: AggregateRequest) -> list[Dimension]:
    """A table's dimensions (none for a count or a summary)."""
    spec = request.aggregate
    if isinstance(spec, HistogramSpec):
        return [spec.by]
    if isinstance(spec, CrossTabSpec):
        return [spec.rows, spec.columns]
    return []


def dimension_name(dimension: Dimension) -> str:
    return dimension.name if isinstance(dimension, CategoryDimension) else dimension.of


def fixed_values(
    dimension: Dimension, vocabulary: dict[str, tuple[str, ...]] | None = None
) -> tuple[Hashable, ...] | None:
    """The values of a dimension known in advance (bins, sexes, a vocabulary), or None for
    open ones, whose values are themselves data."""
    if isinstance(dimension, BinnedDimension):
        return (*range(dimension.bin_count), OUTSIDE)
    known = (vocabulary or {}).get(dimension.name) or FIXED_CATEGORIES.get(dimension.name)
    return None if known is None else tuple(known)


def table_facts(index: FindingsIndex, request: AggregateRequest) -> Facts:
    """One row per (unit, patient, raw dimension values...) of the request's cohort."""
    dimensions = dimensions_of(request)
    sql = facts_sql(request.cohort, request.level, dimensions)
    columns = index.analytic_columns(sql.text, sql.params)
    return Facts.from_columns(columns, len(dimensions), request.level)


def cohort_membership(
    request: AggregateRequest, facts: Facts, query: Callable[[], Membership]
) -> Membership:
    """The request's cohort membership: from its fact rows when they hold every unit of the
    cohort (:func:`~gateway.federated.query.facts_cover_cohort`), else from ``query`` (the
    cohort's own membership query, a second pass over the index)."""
    if facts_cover_cohort(request.cohort, request.level, dimensions_of(request)):
        return Membership.from_ranks(request.level, facts.unit_ranks, facts.patient_ranks)
    return query()


def grid(axes_values: Sequence[Sequence[Hashable]]) -> list[CellKey]:
    """Every cell of the table whose axes take ``axes_values``, in their order."""
    keys: list[CellKey] = [()]
    for values in axes_values:
        keys = [(*key, value) for key in keys for value in values]
    return keys


def label(dimension: Dimension, value: Hashable) -> Any:
    """A cell's value as answers show it: the category, or a bin's ``{low, high}``."""
    if isinstance(dimension, CategoryDimension) or value == OTHER:
        return value
    assert isinstance(value, int)
    if value == OUTSIDE:
        return OUTSIDE_LABEL
    low = dimension.start + value * dimension.width
    return {"low": low, "high": min(low + dimension.width, dimension.stop)}


def cell_entry(dimensions: Sequence[Dimension], key: CellKey) -> dict[str, Any]:
    labels = [label(d, v) for d, v in zip(dimensions, key, strict=True)]
    if len(labels) == 1:
        return {"value": labels[0]}
    return {"row": labels[0], "column": labels[1]}


def first_per_group(groups: np.ndarray, order: np.ndarray, bound: int) -> np.ndarray:
    """Indices of the first ``bound`` rows of each group, rows ranked by ``order`` within it
    (a patient's rows beyond ``bound`` are left out: the sensitivity of a noisy answer)."""
    if not len(groups):
        return np.empty(0, dtype=np.int64)
    ranked = order_by(groups, order)
    return np.sort(ranked[first_of_each_run(groups[ranked], bound)])
