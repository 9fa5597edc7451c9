"""Set operations on int64 arrays by sorting.

numpy's sorts of a few ten thousand int64 take tens of microseconds; ``np.unique`` (a hash table
since numpy 2.3) takes a millisecond or more on the same arrays. The membership of every cohort
and cell goes through these, so they are written with sorts.

Pairs and triples are packed into one int64 and sorted plainly (``np.lexsort`` is ten times
slower). Small non-negative values (cell codes, :class:`Ranks`) are packed as they are; the
index's keys are salted 64-bit hashes, which are first replaced by their dense ranks, one
argsort each. A table ranks its units and patients once (:attr:`Facts.unit_ranks`) and passes
the ranks on, so that no array is ranked twice for one answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Packed values stay below this (a product of widths that would pass it is ranked first).
_PACKABLE = 2**62


@dataclass(frozen=True)
class Ranks:
    """An int64 array's distinct values (sorted) and each element's position among them."""

    values: np.ndarray
    ranks: np.ndarray  # int64, values[ranks] is the array

    @property
    def width(self) -> int:
        return max(len(self.values), 1)


def dense_ranks(array: np.ndarray) -> Ranks:
    """``np.unique(array, return_inverse=True)``, with one argsort and no hash table; integers
    of a narrow range (years, ages, codes) by counting, without sorting."""
    if array.dtype.kind in "iu" and len(array):
        low, high = int(array.min()), int(array.max())
        if high - low < 4 * len(array) + 1024:
            offsets = array - low
            present = np.bincount(offsets, minlength=high - low + 1) > 0
            position = np.cumsum(present) - 1
            return Ranks(np.flatnonzero(present).astype(array.dtype) + low, position[offsets])
    order = np.argsort(array)
    ordered = array[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]] if len(ordered) else np.empty(0, dtype=bool)
    ranks = np.empty(len(array), dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    return Ranks(ordered[new], ranks)


def _packing_width(values: np.ndarray) -> int | None:
    """The width that packs ``values`` as they are (their maximum plus one), or None when
    they are negative or too wide to pack without ranking them first."""
    if not len(values):
        return 1
    if values.min() < 0:
        return None
    return int(values.max()) + 1


def _packable(*arrays: np.ndarray) -> list[int] | None:
    """Each array's packing width, or None when they cannot be packed together as they are."""
    widths: list[int] = []
    for array in arrays:
        # Signed integers only: numpy adds int64 and uint64 as floats.
        width = _packing_width(array) if array.dtype.kind == "i" else None
        if width is None:
            return None
        widths.append(width)
    return widths if int(np.prod(widths, dtype=object)) < _PACKABLE else None


def distinct_pairs(groups: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (group, key) pairs, sorted by group then key, as two arrays."""
    widths = _packable(groups, keys)
    if widths is not None:
        packed = unique_sorted(groups.astype(np.int64) * widths[1] + keys)
        return packed // widths[1], packed % widths[1]
    group_ranks, key_ranks = dense_ranks(groups), dense_ranks(keys)
    packed = unique_sorted(group_ranks.ranks * key_ranks.width + key_ranks.ranks)
    return (
        group_ranks.values[packed // key_ranks.width],
        key_ranks.values[packed % key_ranks.width],
    )


def runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each run of equal values in a sorted array: the value, where it starts and ends."""
    if not len(sorted_values):
        empty = np.empty(0, dtype=np.int64)
        return sorted_values[:0], empty, empty
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(sorted_values)]
    return sorted_values[starts], starts, ends


def first_of_each_run(sorted_values: np.ndarray, bound: int) -> np.ndarray:
    """Positions (ascending) of the first ``bound`` elements of each run of equal values in a
    sorted array."""
    _, starts, ends = runs(sorted_values)
    run_start = np.repeat(starts, ends - starts)
    return np.flatnonzero(np.arange(len(sorted_values)) - run_start < bound)


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (no hash table)."""
    ordered = np.sort(values)
    return runs(ordered)[0]


def distinct_per_group(groups: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct group, how many distinct keys occur with it (``keys`` may be ranks:
    the count is the same)."""
    pair_groups, _ = distinct_pairs(groups, keys)
    values, starts, ends = runs(pair_groups)
    return values, ends - starts


def distinct_triples(
    first: np.ndarray, second: np.ndarray, third: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (first, second, third) rows, sorted by first, then second, then third:
    what ``np.unique(np.stack(...), axis=0)`` gives, five times faster."""
    widths = _packable(first, second, third)
    if widths is not None:
        packed = unique_sorted((first.astype(np.int64) * widths[1] + second) * widths[2] + third)
        pairs, thirds = np.divmod(packed, widths[2])
        firsts, seconds = np.divmod(pairs, widths[1])
        return firsts, seconds, thirds
    # Rank each column, then the (first, second) pairs, so that every packing stays below
    # rows squared.
    first_ranks, second_ranks, third_ranks = (dense_ranks(a) for a in (first, second, third))
    pair_ranks = dense_ranks(first_ranks.ranks * second_ranks.width + second_ranks.ranks)
    packed = unique_sorted(pair_ranks.ranks * third_ranks.width + third_ranks.ranks)
    pairs = pair_ranks.values[packed // third_ranks.width]
    return (
        first_ranks.values[pairs // second_ranks.width],
        second_ranks.values[pairs % second_ranks.width],
        third_ranks.values[packed % third_ranks.width],
    )


def order_by(*keys: np.ndarray) -> np.ndarray:
    """The indices that sort rows by the first key, then the second...: ``np.lexsort`` of the
    keys in reverse, by one packed sort where all are small non-negative integers."""
    positions = np.arange(len(keys[0]))
    widths = _packable(*keys, positions)
    if widths is None:
        return np.lexsort(keys[::-1])
    # The row's position, packed last, keeps ties in their order (as lexsort does).
    packed = np.zeros(len(positions), dtype=np.int64)
    for key, width in zip((*keys, positions), widths, strict=True):
        packed = packed * width + key
    return np.sort(packed) % widths[-1]
