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
from gateway.federated.facts import UNKNOWN, Facts, cell_codes
from gateway.federated.query import OUTSIDE
from gateway.federated.sorted_sets import distinct_pairs, runs
from gateway.index.units import canonical, canonical_unit


def fixed_values(dimension: Dimension) -> tuple[Hashable, ...] | None:
    """The values of a dimension known in advance (bins, sexes), or None for open ones."""
    if isinstance(dimension, BinnedDimension):
        return (*range(dimension.bin_count), OUTSIDE)
    return FIXED_CATEGORIES.get(dimension.name)


def cell_memberships(
    level: Level,
    dimensions: Sequence[Dimension],
    facts: Facts,
    merged: Sequence[set[Hashable]],
) -> dict[CellKey, Membership]:
    """Per cell, its units and patients, from the cohort's fact rows.

    Vectorised: each row gets one integer code for its cell, the distinct (cell, patient) and
    (cell, unit) pairs come out of one sort each, and each run of one code is one cell.
    """
    if not len(facts):
        return {}
    cells = cell_codes(dimensions, facts, merged, [fixed_values(d) for d in dimensions])
    codes = cells.codes[cells.valid]
    units, patients = facts.units[cells.valid], facts.patients[cells.valid]
    empty = np.empty(0, dtype=np.int64)
    patient_codes, cell_patients = distinct_pairs(codes, patients)
    unit_runs: dict[int, tuple[int, int]] = {}
    cell_units = unit_patients = empty
    if level != "patients":
        whole = Membership.from_columns(level, units, patients)
        unit_codes, cell_units = distinct_pairs(codes, units)
        unit_patients = whole.unit_patients[np.searchsorted(whole.units, cell_units)]
        values, starts, ends = runs(unit_codes)
        unit_runs = {
            code: (start, end)
            for code, start, end in zip(
                values.tolist(), starts.tolist(), ends.tolist(), strict=True
            )
        }
    result: dict[CellKey, Membership] = {}
    values, starts, ends = runs(patient_codes)
    for code, start, end in zip(values.tolist(), starts.tolist(), ends.tolist(), strict=True):
        unit_start, unit_end = unit_runs.get(code, (0, 0))
        result[cells.key(code)] = Membership(
            level,
            cell_patients[start:end],
            cell_units[unit_start:unit_end],
            unit_patients[unit_start:unit_end],
        )
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
