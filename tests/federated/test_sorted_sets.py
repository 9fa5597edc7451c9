"""The sort-based set operations agree with numpy's own on any int64 input."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gateway.federated.membership import Membership
from gateway.federated.sorted_sets import (
    dense_ranks,
    distinct_pairs,
    distinct_per_group,
    distinct_triples,
    first_of_each_run,
    order_by,
    unique_sorted,
)

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# Keys as the index has them (salted 64-bit hashes: ranked before packing), and small
# non-negative ones (cell codes, ranks: packed as they are).
keys = st.one_of(int64, st.integers(min_value=0, max_value=40))
pairs = st.lists(st.tuples(st.integers(min_value=0, max_value=5), keys), max_size=60)


@given(st.lists(int64, max_size=60))
def test_unique_sorted_is_np_unique(values: list[int]) -> None:
    array = np.array(values, dtype=np.int64)
    assert unique_sorted(array).tolist() == np.unique(array).tolist()


@given(pairs)
def test_distinct_pairs_are_the_sorted_set_of_pairs(rows: list[tuple[int, int]]) -> None:
    groups = np.array([g for g, _ in rows], dtype=np.int64)
    keys = np.array([k for _, k in rows], dtype=np.int64)
    found_groups, found_keys = distinct_pairs(groups, keys)
    assert list(zip(found_groups.tolist(), found_keys.tolist(), strict=True)) == sorted(set(rows))
    values, counts = distinct_per_group(groups, keys)
    expected: dict[int, int] = {}
    for group, _ in set(rows):
        expected[group] = expected.get(group, 0) + 1
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == expected


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 8)), max_size=60))
def test_membership_from_rows_with_repeats(rows: list[tuple[int, int]]) -> None:
    # A unit has one patient: derive it from the unit so that the rows are consistent.
    rows = [(unit, unit % 9) for unit, _ in rows]
    membership = Membership.from_pairs("studies", rows)
    assert membership.patients.tolist() == sorted({p for _, p in rows})
    assert membership.units.tolist() == sorted({u for u, _ in rows})
    assert membership.unit_patients.tolist() == [u % 9 for u in membership.units.tolist()]
    assert Membership.from_pairs("patients", rows).unit_count == len({p for _, p in rows})


@given(st.one_of(st.lists(int64, max_size=60), st.lists(st.integers(-5, 3000), max_size=60)))
def test_dense_ranks_are_np_uniques_inverse(values: list[int]) -> None:
    array = np.array(values, dtype=np.int64)
    ranked = dense_ranks(array)
    distinct, inverse = np.unique(array, return_inverse=True)
    assert ranked.values.tolist() == distinct.tolist()
    assert ranked.ranks.tolist() == inverse.reshape(-1).tolist()


@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.one_of(st.integers(0, 9), int64), st.integers(0, 3)),
        max_size=60,
    )
)
def test_order_by_is_lexsort(rows: list[tuple[int, int, int]]) -> None:
    first, second, third = (np.array([row[n] for row in rows], dtype=np.int64) for n in range(3))
    assert order_by(first, second).tolist() == np.lexsort((second, first)).tolist()
    assert order_by(first, third, second).tolist() == np.lexsort((second, third, first)).tolist()


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4),
            keys,
            st.one_of(st.integers(-3, 3), st.integers(0, 3)),
        )
    )
)
def test_distinct_triples_are_np_unique_of_rows(rows: list[tuple[int, int, int]]) -> None:
    array = np.array(rows, dtype=np.int64).reshape(-1, 3)
    found = distinct_triples(array[:, 0], array[:, 1], array[:, 2])
    expected = np.unique(array, axis=0) if len(rows) else array
    assert np.stack(found, axis=1).reshape(-1, 3).tolist() == expected.tolist()


@given(st.lists(st.integers(0, 5), max_size=60), st.integers(1, 3))
def test_first_of_each_run_keeps_the_first_of_each_value(values: list[int], bound: int) -> None:
    ordered = sorted(values)
    kept = first_of_each_run(np.array(ordered, dtype=np.int64), bound).tolist()
    expected = [n for n, value in enumerate(ordered) if ordered[:n].count(value) < bound]
    assert kept == expected
