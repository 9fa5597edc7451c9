"""Set operations on int64 arrays by sorting.

numpy's sorts of a few ten thousand int64 take tens of microseconds; ``np.unique`` (a hash table
since numpy 2.3) takes a millisecond or more on the same arrays. The membership of every cohort
and cell goes through these, so they are written with sorts.
"""

from __future__ import annotations

import numpy as np


def distinct_pairs(groups: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (group, key) pairs, sorted by group then key, as two arrays.

    Both sides are replaced by their dense ranks and packed into one int64 per pair, so that
    one plain sort does what ``np.lexsort`` (ten times slower) would."""
    group_values, group_ranks = np.unique(groups, return_inverse=True)
    key_values, key_ranks = np.unique(keys, return_inverse=True)
    width = max(len(key_values), 1)
    packed = unique_sorted(group_ranks.astype(np.int64) * width + key_ranks)
    return group_values[packed // width], key_values[packed % width]


def runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each run of equal values in a sorted array: the value, where it starts and ends."""
    if not len(sorted_values):
        empty = np.empty(0, dtype=np.int64)
        return sorted_values[:0], empty, empty
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(sorted_values)]
    return sorted_values[starts], starts, ends


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (no hash table)."""
    ordered = np.sort(values)
    return runs(ordered)[0]


def distinct_per_group(groups: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct group, how many distinct keys occur with it."""
    pair_groups, _ = distinct_pairs(groups, keys)
    values, starts, ends = runs(pair_groups)
    return values, ends - starts


def distinct_triples(
    first: np.ndarray, second: np.ndarray, third: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (first, second, third) rows, sorted by first, then second, then third.

    What ``np.unique(np.stack(...), axis=0)`` gives, five times faster: the (first, second)
    pairs are packed into one int64 by their dense ranks and ranked again, then packed with
    the third column's ranks and sorted plainly (each packing stays below rows squared)."""
    first_values, first_ranks = np.unique(first, return_inverse=True)
    second_values, second_ranks = np.unique(second, return_inverse=True)
    third_values, third_ranks = np.unique(third, return_inverse=True)
    second_width = max(len(second_values), 1)
    pair_values, pair_ranks = np.unique(
        first_ranks.astype(np.int64) * second_width + second_ranks, return_inverse=True
    )
    third_width = max(len(third_values), 1)
    packed = unique_sorted(pair_ranks.astype(np.int64) * third_width + third_ranks)
    pairs = pair_values[packed // third_width]
    return (
        first_values[pairs // second_width],
        second_values[pairs % second_width],
        third_values[packed % third_width],
    )
