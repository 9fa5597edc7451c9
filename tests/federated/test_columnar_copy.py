"""The columnar copy of the findings index (issue 19): the same rows as the index, always.

Every query the federated API's compiler writes (fact rows, memberships, summaries'
values, vocabularies) is run on the index (SQLite) and on its DuckDB copy over synthetic
cohorts; and the copy is held current across writes, replaced reports, restarts, pruned
change logs, an index restored from an older backup and a damaged copy file.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.federated.cohort import AggregateRequest, BinnedDimension
from gateway.federated.query import facts_sql, membership_sql, values_sql, vocabulary_sql
from gateway.federated.tables import dimensions_of
from gateway.federated.vocabulary import VOCABULARY_LISTS
from gateway.index import FindingsIndex, IndexSettings
from gateway.index.columnar import COPY_FILE_NAME
from gateway.index.findings_index import SQLITE_FILE_NAME
from tests.federated.synthetic import (
    DIAMETER,
    MASS,
    NODULE,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
    write_patients,
)
from tests.federated.test_fact_rows import COHORTS, TABLES, mixed_patients

LEVELS = ("patients", "studies", "series")


def _queries() -> list[tuple[str, list[Any]]]:
    """Every kind of SQL the answers run, over every test cohort."""
    queries = []
    for cohort in COHORTS:
        for level in LEVELS:
            base = AggregateRequest.model_validate({"cohort": cohort, "level": level})
            sql = membership_sql(base.cohort, base.level)
            queries.append((sql.text, list(sql.params)))
            dimension = BinnedDimension(
                of="measurement", concept=DIAMETER, unit="mm", start=0, stop=30, width=30
            )
            sql = values_sql(base.cohort, base.level, dimension)
            queries.append((sql.text, list(sql.params)))
            for table in TABLES:
                aggregate = (
                    {"kind": "histogram", "by": table[0]}
                    if len(table) == 1
                    else {"kind": "crosstab", "rows": table[0], "columns": table[1]}
                )
                request = AggregateRequest.model_validate(
                    {"cohort": cohort, "level": level, "aggregate": aggregate}
                )
                sql = facts_sql(request.cohort, request.level, dimensions_of(request))
                queries.append((sql.text, list(sql.params)))
        for name in VOCABULARY_LISTS:
            sql = vocabulary_sql(base.cohort, name)
            queries.append((sql.text, list(sql.params)))
    return queries


QUERIES = _queries()


def _copy_rows(index: FindingsIndex, text: str, params: list[Any]) -> Counter[Any]:
    assert index.copy is not None
    rows = index.copy.query(text, params)
    assert rows is not None, "the copy did not answer"
    return Counter(rows)


def _assert_same_everywhere(index: FindingsIndex) -> None:
    for text, params in QUERIES:
        assert _copy_rows(index, text, params) == Counter(index.database.query(text, params)), text


def _open_with_copy(folder: Path) -> FindingsIndex:
    index = FindingsIndex.open(IndexSettings(), folder)
    copy = index.use_columnar_copy()
    assert copy is not None and copy.wait_until_ready(60)
    return index


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    index = FindingsIndex.open(IndexSettings(), tmp_path)
    write_patients(index, mixed_patients(19))
    index.close()
    yield tmp_path


@pytest.fixture(scope="module")
def copied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FindingsIndex]:
    folder = Path(tmp_path_factory.mktemp("copied"))
    index = FindingsIndex.open(IndexSettings(), folder)
    write_patients(index, mixed_patients(19))
    index.use_columnar_copy()
    assert index.copy is not None and index.copy.wait_until_ready(60)
    yield index
    index.close()


@pytest.mark.parametrize("number", range(len(QUERIES)))
def test_the_copy_gives_the_index_rows_for_every_query(copied: FindingsIndex, number: int) -> None:
    text, params = QUERIES[number]
    rows = copied.database.query(text, params)
    assert _copy_rows(copied, text, params) == Counter(rows)
    # What the federated API calls gives the same, by row and by column.
    assert Counter(copied.analytic_query(text, params)) == Counter(rows)
    columns = copied.analytic_columns(text, params)
    as_rows = zip(*[column.tolist() for column in columns], strict=True)
    assert Counter(as_rows) == Counter(rows)


def _last_change(folder: Path) -> int:
    with sqlite3.connect(folder / SQLITE_FILE_NAME) as connection:
        return int(connection.execute("SELECT MAX(change_id) FROM index_changes").fetchone()[0])


def _more_patients(prefix: str) -> list[SyntheticPatient]:
    return [
        SyntheticPatient(
            f"{prefix}{number}",
            "F",
            [
                SyntheticStudy(
                    date=20240301,
                    modalities=("CT",),
                    age=50 + number,
                    findings=[SyntheticFinding(NODULE, 9.0 + number), SyntheticFinding(MASS)],
                )
            ],
        )
        for number in range(5)
    ]


def test_writes_after_the_copy_are_in_the_next_answer(site: Path) -> None:
    index = _open_with_copy(site)
    try:
        write_patients(index, _more_patients("NEW"))
        # A report sent again with other findings replaces its rows (same patient and study).
        replaced = _more_patients("NEW")[:1]
        replaced[0].studies[0].findings = [SyntheticFinding(NODULE, 25.0)]
        write_patients(index, replaced)
        _assert_same_everywhere(index)
        assert index.copy is not None and index.copy.mark() == _last_change(site)
    finally:
        index.close()


def test_a_restarted_gateway_catches_up_without_building_again(site: Path) -> None:
    _open_with_copy(site).close()
    # Written while no copy was open (the CLI's `fedgate index sync`, say).
    index = FindingsIndex.open(IndexSettings(), site)
    write_patients(index, _more_patients("SYNC"))
    index.close()
    index = FindingsIndex.open(IndexSettings(), site)
    try:
        copy = index.use_columnar_copy()
        assert copy is not None and copy.ready, "caught up at once, not built again"
        _assert_same_everywhere(index)
    finally:
        index.close()


def test_changes_pruned_past_the_mark_build_the_copy_again(site: Path) -> None:
    index = _open_with_copy(site)
    try:
        write_patients(index, _more_patients("A"))
        write_patients(index, _more_patients("B"))
        # Another pruner forgot changes the copy had not applied yet.
        last = _last_change(site)
        index.database.execute("DELETE FROM index_changes WHERE change_id < ?", (last,))
        text, params = QUERIES[0]
        assert index.copy is not None and index.copy.query(text, params) is None
        # Meanwhile the index answers.
        assert Counter(index.analytic_query(text, params)) == Counter(
            index.database.query(text, params)
        )
        assert index.copy.wait_until_ready(60)
        _assert_same_everywhere(index)
    finally:
        index.close()


def test_an_index_older_than_its_copy_builds_the_copy_again(site: Path, tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    index = FindingsIndex.open(IndexSettings(), site)
    index.database.query("PRAGMA wal_checkpoint(TRUNCATE)")
    index.close()
    shutil.copy(site / SQLITE_FILE_NAME, backup / SQLITE_FILE_NAME)
    index = _open_with_copy(site)
    write_patients(index, _more_patients("LOST"))
    _assert_same_everywhere(index)  # the copy now holds them
    index.close()
    # The index restored from the backup: the copy holds patients it no longer has.
    for suffix in ("-wal", "-shm"):
        (site / (SQLITE_FILE_NAME + suffix)).unlink(missing_ok=True)
    shutil.copy(backup / SQLITE_FILE_NAME, site / SQLITE_FILE_NAME)
    index = _open_with_copy(site)
    try:
        _assert_same_everywhere(index)
    finally:
        index.close()


def test_a_damaged_copy_is_built_again(site: Path) -> None:
    _open_with_copy(site).close()
    (site / COPY_FILE_NAME).write_bytes(b"not a DuckDB file" * 100)
    index = _open_with_copy(site)
    try:
        _assert_same_everywhere(index)
    finally:
        index.close()


def test_no_copy_when_turned_off(site: Path) -> None:
    index = FindingsIndex.open(IndexSettings(columnar_copy=False), site)
    try:
        assert index.use_columnar_copy() is None
        assert not (site / COPY_FILE_NAME).exists()
        # The index answers by column too.
        for text, params in QUERIES[:40]:
            rows = index.database.query(text, params)
            columns = index.analytic_columns(text, params)
            assert Counter(zip(*columns, strict=True)) == Counter(rows)
    finally:
        index.close()
