"""Who is behind each cell of a table, and what question each cell answers.

The differencing guard (:mod:`.differencing`) compares every released cell, not only the
cohort: otherwise two histograms with shifted bins, [60, 70) and [60, 69), would give away the
patients aged 69 by subtraction. A cell is the cohort narrowed by the cell's condition; where
that condition is a cohort attribute (sex, ModalitiesInStudy, a whole-year age range, a study
year), it is written as that attribute, so that "the F cell of a histogram by sex" and "a count
with PatientSex=F" are recognised as the same question.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from gateway.federated.cohort import (
    FIXED_CATEGORIES,
    BinnedDimension,
    CategoryDimension,
    Cohort,
    Dimension,
    Level,
)
from gateway.federated.differencing import Membership
from gateway.federated.disclosure import OTHER, CellKey
from gateway.federated.query import OUTSIDE
from gateway.index.units import canonical, canonical_unit

UNKNOWN = "(unknown)"


def category(value: Any) -> Hashable:
    """A category value as cells key it (None is "(unknown)", whole floats are ints)."""
    if value is None:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fixed_values(dimension: Dimension) -> tuple[Hashable, ...] | None:
    """The values of a dimension known in advance (bins, sexes), or None for open ones."""
    if isinstance(dimension, BinnedDimension):
        return (*range(dimension.bin_count), OUTSIDE)
    return FIXED_CATEGORIES.get(dimension.name)


def cell_memberships(
    level: Level,
    dimensions: Sequence[Dimension],
    rows: Sequence[Any],
    merged: Sequence[set[Hashable]],
) -> dict[CellKey, Membership]:
    """Per cell, its units and patients, from rows of (unit, patient, raw dimension values).

    Vectorised: each row gets one integer code for its cell, rows are sorted by code, and each
    run of equal codes is one cell's membership.
    """
    if not rows:
        return {}
    count = len(rows)
    codes = np.zeros(count, dtype=np.int64)
    valid = np.ones(count, dtype=bool)
    axes: list[list[Hashable]] = []
    for number, (dimension, rare) in enumerate(zip(dimensions, merged, strict=True)):
        column = [row[2 + number] for row in rows]
        labels: list[Hashable]
        if isinstance(dimension, BinnedDimension):
            values = np.array([np.nan if v is None else v for v in column], dtype=float)
            inside = (values >= dimension.start) & (values < dimension.stop)
            bins = np.where(
                inside, np.floor((values - dimension.start) / dimension.width), dimension.bin_count
            )
            axis_codes = np.nan_to_num(bins, nan=dimension.bin_count).astype(np.int64)
            labels = [*range(dimension.bin_count), OUTSIDE]
        else:
            fixed = fixed_values(dimension)
            mapped = [category(v) for v in column]
            mapped = [OTHER if v in rare else v for v in mapped]
            if fixed is not None:
                valid &= np.array([v in fixed for v in mapped], dtype=bool)
            labels = sorted(set(mapped), key=str)
            index = {value: position for position, value in enumerate(labels)}
            axis_codes = np.array([index[v] for v in mapped], dtype=np.int64)
        codes = codes * (len(labels) + 1) + axis_codes
        axes.append(labels)
    units = np.array([row[0] for row in rows], dtype=np.int64)[valid]
    patients = np.array([row[1] for row in rows], dtype=np.int64)[valid]
    codes = codes[valid]
    order = np.argsort(codes, kind="stable")
    codes, units, patients = codes[order], units[order], patients[order]
    distinct, starts = np.unique(codes, return_index=True)
    ends = [*starts[1:].tolist(), len(codes)]
    result: dict[CellKey, Membership] = {}
    for code, start, end in zip(distinct.tolist(), starts.tolist(), ends, strict=True):
        key: list[Hashable] = []
        for labels in reversed(axes):
            code, position = divmod(code, len(labels) + 1)
            key.append(labels[position])
        pairs = np.stack([units[start:end], patients[start:end]], axis=1)
        result[tuple(reversed(key))] = Membership.from_pairs(level, pairs)
    return result


def cell_definition(
    cohort: Cohort, level: Level, dimensions: Sequence[Dimension], key: CellKey
) -> str:
    """The canonical question a cell answers: the cohort narrowed by the cell's condition."""
    definition = cohort.definition()
    attributes: dict[str, Any] = definition.setdefault("attributes", {})
    conditions: list[dict[str, Any]] = []
    for dimension, value in zip(dimensions, key, strict=True):
        attribute = _as_attribute(dimension, value, level)
        if attribute is not None and attribute[0] not in attributes:
            attributes[attribute[0]] = attribute[1]
        else:
            conditions.append(_condition(dimension, value))
    if conditions:
        definition["cell"] = conditions
    return json.dumps(definition, sort_keys=True)


def _as_attribute(dimension: Dimension, value: Hashable, level: Level) -> tuple[str, Any] | None:
    """The cohort attribute (in :meth:`Cohort.definition`'s canonical form) a cell stands for."""
    if value in (OTHER, UNKNOWN, OUTSIDE):
        return None
    if isinstance(dimension, CategoryDimension):
        if dimension.name == "sex":
            return "PatientSex", [value]
        if dimension.name == "modality":
            return ("Modality" if level == "series" else "ModalitiesInStudy"), [value]
        if dimension.name == "study_year" and isinstance(value, int):
            return "StudyDate", [float(value * 10000 + 101), float(value * 10000 + 1231)]
        return None
    if dimension.of == "age" and isinstance(value, int):
        low = dimension.start + value * dimension.width
        high = min(low + dimension.width, dimension.stop)
        if float(low).is_integer() and float(high).is_integer():
            return "PatientAge", [float(low), float(high) - 1.0]
    return None


def _condition(dimension: Dimension, value: Hashable) -> dict[str, Any]:
    if isinstance(dimension, CategoryDimension):
        return {"name": dimension.name, "concept": dimension.concept, "value": str(value)}
    assert isinstance(value, int)
    unit = dimension.unit or ""
    if value == OUTSIDE:
        return {
            "of": dimension.of,
            "concept": dimension.concept,
            "unit": unit,
            "outside": [dimension.start, dimension.stop],
        }
    low = dimension.start + value * dimension.width
    high = min(low + dimension.width, dimension.stop)
    if dimension.of == "measurement":
        low, high = canonical(low, unit)[0], canonical(high, unit)[0]
    return {
        "of": dimension.of,
        "concept": dimension.concept,
        "unit": canonical_unit(unit) if dimension.of == "measurement" else "a",
        "range": [low, high],
    }
