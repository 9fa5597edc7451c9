"""A site's training table is built once per run, plan and state of the index, and handed from
the executor's forked task to the executor (gateway.learning.table_cache)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedgate.phantom_cohort import generate_cohort, write_cohort_to_index
from gateway.index import FindingsIndex, IndexSettings
from gateway.learning import table_cache
from gateway.learning.table import SiteTable
from gateway.learning.table_cache import cached_site_table
from tests.learning.cohorts import PLAN, phantom_site, plan
from tests.support.postgres import PostgresServer

SETTINGS = IndexSettings()


@pytest.fixture(autouse=True)
def _nothing_kept() -> Iterator[None]:
    table_cache._kept = table_cache._built = None
    yield
    table_cache._kept = table_cache._built = None


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    phantom_site(tmp_path, 1, 40)
    return tmp_path


def _rows(table: SiteTable) -> int:
    return table.n_train + table.n_test


def test_one_run_builds_the_table_once(data_dir: Path) -> None:
    first = cached_site_table(SETTINGS, data_dir, plan(), run_id=1)
    assert cached_site_table(SETTINGS, data_dir, plan(), run_id=1) is first


def test_a_new_run_or_a_new_plan_builds_it_again(data_dir: Path) -> None:
    first = cached_site_table(SETTINGS, data_dir, plan(), run_id=1)
    again = cached_site_table(SETTINGS, data_dir, plan(), run_id=2)
    assert again is not first
    np.testing.assert_array_equal(again.x_train, first.x_train)
    other = plan(PLAN.replace("holdout: 0.25", "holdout: 0.5"))
    halved = cached_site_table(SETTINGS, data_dir, other, run_id=2)
    assert halved is not again and halved.n_test > again.n_test


def test_a_changed_index_builds_it_again(data_dir: Path) -> None:
    # The gateway holds the index open while it runs (its write-ahead log exists).
    gateway = FindingsIndex.open(SETTINGS, data_dir)
    try:
        first = cached_site_table(SETTINGS, data_dir, plan(), run_id=1)
        assert cached_site_table(SETTINGS, data_dir, plan(), run_id=1) is first
        # New patients arrive during the run: the next message's table has their rows.
        write_cohort_to_index(gateway, generate_cohort(2, 10))
        grown = cached_site_table(SETTINGS, data_dir, plan(), run_id=1)
        assert _rows(grown) == _rows(first) + 10
        assert cached_site_table(SETTINGS, data_dir, plan(), run_id=1) is grown
    finally:
        gateway.close()


def test_a_changed_postgresql_index_builds_it_again(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    settings = IndexSettings(url=postgres.url)
    gateway = FindingsIndex.open(settings, tmp_path)
    try:
        write_cohort_to_index(gateway, generate_cohort(1, 40))
        first = cached_site_table(settings, tmp_path, plan(), run_id=1)
        assert cached_site_table(settings, tmp_path, plan(), run_id=1) is first
        write_cohort_to_index(gateway, generate_cohort(2, 10))
        grown = cached_site_table(settings, tmp_path, plan(), run_id=1)
        assert _rows(grown) == _rows(first) + 10
        assert cached_site_table(settings, tmp_path, plan(), run_id=1) is grown
    finally:
        gateway.close()


def test_the_executor_keeps_the_table_its_forked_task_built(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in gateway.learning.executor: the child builds and publishes; the parent receives,
    and answers the next message of the run without building."""
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(reading)
            cached_site_table(SETTINGS, data_dir, plan(), run_id=7)
            table_cache.publish(writing)
            code = 0
        finally:
            os._exit(code)
    os.close(writing)
    data = b""
    while chunk := os.read(reading, 1 << 16):
        data += chunk
    os.close(reading)
    assert os.waitpid(child, 0)[1] == 0
    table_cache.receive(data)

    def no_building(*_: object) -> SiteTable:
        raise AssertionError("the table was built again")

    monkeypatch.setattr(table_cache, "site_table", no_building)
    kept = cached_site_table(SETTINGS, data_dir, plan(), run_id=7)
    index = FindingsIndex.open(SETTINGS, data_dir)
    try:
        from gateway.learning.table import site_table

        expected = site_table(index, plan().plan)
    finally:
        index.close()
    np.testing.assert_array_equal(kept.x_train, expected.x_train)
    np.testing.assert_array_equal(kept.y_test, expected.y_test)
    # Another run builds its own.
    with pytest.raises(AssertionError, match="built again"):
        cached_site_table(SETTINGS, data_dir, plan(), run_id=8)
