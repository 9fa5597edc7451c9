"""A cohort's fact rows as columns, and the cell each row falls in.

A table over a cohort is computed from its fact rows, (unit, patient, raw dimension values...),
fetched once: the cell counts of distinct units and patients, and each patient's rows for a
noisy answer's bound, all come from the same columns. Everything here is vectorised with sorts,
never with hashing per row: numpy's sorts of a few ten thousand int64 are ten times faster
than ``np.unique``'s hash tables, and a Python loop per row would cost more than the SQL.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Any

import numpy as np

from gateway.federated.cohort import BinnedDimension, Dimension, Level
from gateway.federated.disclosure import OTHER, CellKey
from gateway.federated.query import OUTSIDE
from gateway.federated.sorted_sets import Ranks, dense_ranks

UNKNOWN = "(unknown)"


def category(value: Any) -> Hashable:
    """A category value as cells key it (None is "(unknown)", whole floats are ints)."""
    if value is None:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _column(column: Any) -> np.ndarray | list[Any]:
    """A column as the cells read it: numbers stay a NumPy array (masked where NULL, as the
    copy gives them); other values become Python objects (None where NULL)."""
    if isinstance(column, np.ndarray):
        if column.dtype.kind in "iuf":
            return column
        values: list[Any] = column.tolist()  # a masked array's masked values become None
        return values
    return list(column)


@dataclass(frozen=True)
class Facts:
    """Fact rows by column: the unit and patient of each row, and its raw dimension values."""

    units: np.ndarray  # int64
    patients: np.ndarray  # int64
    columns: list[np.ndarray | list[Any]]  # numbers as arrays (masked where NULL), or values
    _encodings: dict[int, tuple[list[Any], np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]], dimensions: int, level: Level) -> Facts:
        """From rows of (unit, patient, values...), or (patient, values...) at patient level
        (:func:`~gateway.federated.query.unit_columns`)."""
        count = len(rows)
        units = np.fromiter(map(itemgetter(0), rows), dtype=np.int64, count=count)
        first = 1 if level == "patients" else 2
        patients = (
            units
            if level == "patients"
            else np.fromiter(map(itemgetter(1), rows), dtype=np.int64, count=count)
        )
        return cls(
            units, patients, [list(map(itemgetter(first + n), rows)) for n in range(dimensions)]
        )

    @classmethod
    def from_columns(cls, columns: Sequence[Any], dimensions: int, level: Level) -> Facts:
        """From the same rows given by column (:meth:`FindingsIndex.analytic_columns`:
        NumPy arrays, masked where NULL, or sequences); no columns at all is no rows."""
        if not len(columns):
            empty = np.empty(0, dtype=np.int64)
            return cls(empty, empty, [[] for _ in range(dimensions)])
        units = np.asarray(columns[0], dtype=np.int64)
        first = 1 if level == "patients" else 2
        patients = units if level == "patients" else np.asarray(columns[1], dtype=np.int64)
        return cls(units, patients, [_column(columns[first + n]) for n in range(dimensions)])

    def __len__(self) -> int:
        return len(self.units)

    @cached_property
    def unit_ranks(self) -> Ranks:
        """The units' dense ranks, computed once for every count of distinct units."""
        return self.patient_ranks if self.units is self.patients else dense_ranks(self.units)

    @cached_property
    def patient_ranks(self) -> Ranks:
        """The patients' dense ranks, computed once for every count of distinct patients."""
        return dense_ranks(self.patients)

    def numbers(self, number: int) -> np.ndarray:
        """Column ``number`` as floats, NaN where NULL."""
        column = self.columns[number]
        if isinstance(column, np.ma.MaskedArray):
            return np.ma.filled(column.astype(float), np.nan)
        return np.asarray(column, dtype=float)  # None becomes NaN

    def encoded(self, number: int) -> tuple[list[Any], np.ndarray]:
        """Column ``number`` dictionary-encoded: its distinct values (None for NULL) and each
        row's position among them. Computed once per column."""
        if number not in self._encodings:
            column = self.columns[number]
            if isinstance(column, np.ndarray):
                self._encodings[number] = _encoded_numbers(column)
            else:
                positions: dict[Any, int] = dict.fromkeys(column, 0)
                for position, value in enumerate(positions):
                    positions[value] = position
                codes = np.fromiter(
                    map(positions.__getitem__, column), dtype=np.int64, count=len(column)
                )
                self._encodings[number] = (list(positions), codes)
        return self._encodings[number]


def _encoded_numbers(column: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """:meth:`Facts.encoded` of a numeric column, by sorting (a dict per row cost 3 ms for
    60,000 rows): the sorted distinct values, then None if any row is NULL."""
    data, null = np.ma.getdata(column), np.ma.getmaskarray(column)
    present = dense_ranks(data[~null])
    codes = np.full(len(column), len(present.values), dtype=np.int64)
    codes[~null] = present.ranks
    values: list[Any] = present.values.tolist()
    return ([*values, None] if null.any() else values), codes


@dataclass(frozen=True)
class CellCodes:
    """One integer per row naming its cell, and how to turn a code back into a cell key."""

    codes: np.ndarray  # int64, one per row
    axes: list[list[Hashable]]  # per dimension, the labels its position codes index
    valid: np.ndarray  # bool, rows whose value is one the dimension can take

    def key(self, code: int) -> CellKey:
        key: list[Hashable] = []
        for labels in reversed(self.axes):
            code, position = divmod(code, len(labels) + 1)
            key.append(labels[position])
        return tuple(reversed(key))


def cell_codes(
    dimensions: Sequence[Dimension],
    facts: Facts,
    merged: Sequence[set[Hashable]] | None = None,
    fixed: Sequence[tuple[Hashable, ...] | None] | None = None,
) -> CellCodes:
    """Place every row in its cell: bins by value, categories as :func:`category` keys them,
    values in ``merged`` (per axis) as ``(other)``; rows with a value outside an axis's
    ``fixed`` values are marked invalid."""
    codes = np.zeros(len(facts), dtype=np.int64)
    valid = np.ones(len(facts), dtype=bool)
    axes: list[list[Hashable]] = []
    for number, dimension in enumerate(dimensions):
        column = facts.columns[number]
        labels: list[Hashable]
        if isinstance(dimension, BinnedDimension):
            values = facts.numbers(number)  # NaN (NULL) falls in the outside bin
            inside = (values >= dimension.start) & (values < dimension.stop)
            bins = np.floor(
                (np.where(inside, values, dimension.start) - dimension.start) / dimension.width
            )
            axis = np.where(inside, bins, dimension.bin_count).astype(np.int64)
            labels = [*range(dimension.bin_count), OUTSIDE]
        else:
            seen, raw_codes = facts.encoded(number)
            rare = merged[number] if merged is not None else set()
            keyed = [category(v) for v in seen]
            keyed = [OTHER if k in rare else k for k in keyed]
            labels = sorted(set(keyed), key=str)
            position = {label: n for n, label in enumerate(labels)}
            lookup = np.array([position[k] for k in keyed], dtype=np.int64)
            axis = lookup[raw_codes] if len(column) else raw_codes
            allowed = fixed[number] if fixed is not None else None
            if allowed is not None and len(column):
                valid &= np.array([label in allowed for label in labels], dtype=bool)[axis]
        codes = codes * (len(labels) + 1) + axis
        axes.append(labels)
    return CellCodes(codes, axes, valid)
