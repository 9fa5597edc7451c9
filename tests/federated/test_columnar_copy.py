"""The columnar copy of the findings index (issue 19): the same rows as the index, always.

Every query the federated API's compiler writes (fact rows, memberships, summaries'
values, vocabularies) is run on the index (SQLite, and a real PostgreSQL) and on its DuckDB
copy over synthetic cohorts; and the copy is held current across writes, replaced reports,
restarts, pruned change logs, an index restored from an older backup, a damaged copy file,
and (PostgreSQL) a second replica writing to the shared index.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.federated.cohort import AggregateRequest, BinnedDimension
from gateway.federated.exact import exact_table
from gateway.federated.membership import Membership
from gateway.federated.noisy import NoisyAnswers
from gateway.federated.query import facts_sql, membership_sql, values_sql, vocabulary_sql
from gateway.federated.settings import DifferentialPrivacySettings
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
from tests.federated.test_fact_rows import COHORTS, TABLES, mixed_patients, table_request
from tests.support.postgres import PostgresServer

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
                request = table_request(cohort, level, table)
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


ENGINES = ("sqlite", "postgresql")
_databases = itertools.count()


def _fresh_database(server: PostgresServer) -> str:
    """A new, empty database on the module's PostgreSQL server: its URL."""
    import psycopg

    name = f"copy_{next(_databases)}"
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + "/" + name


class Site:
    """A site's index settings and data folder (the copy lives there, the salt too)."""

    def __init__(self, folder: Path, settings: IndexSettings):
        self.folder = folder
        self.settings = settings

    def open(self, copy: bool = True) -> FindingsIndex:
        index = FindingsIndex.open(self.settings, self.folder)
        if copy:
            made = index.use_columnar_copy()
            assert made is not None and made.wait_until_ready(60)
        return index


def _site(folder: Path, engine: str, request: pytest.FixtureRequest) -> Site:
    if engine == "sqlite":
        return Site(folder, IndexSettings())
    server: PostgresServer = request.getfixturevalue("postgres")
    return Site(folder, IndexSettings(url=_fresh_database(server)))


@pytest.fixture(params=ENGINES)
def site(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    made = _site(tmp_path / "site", request.param, request)
    made.folder.mkdir()
    index = made.open(copy=False)
    write_patients(index, mixed_patients(19))
    index.close()
    yield made


@pytest.fixture(scope="module", params=ENGINES)
def copied(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[FindingsIndex]:
    made = _site(Path(tmp_path_factory.mktemp("copied")), request.param, request)
    index = made.open(copy=False)
    write_patients(index, mixed_patients(19) + _unknown_age_and_sex())
    index.use_columnar_copy()
    assert index.copy is not None and index.copy.wait_until_ready(60)
    yield index
    index.close()


def _unknown_age_and_sex() -> list[SyntheticPatient]:
    """Patients whose sex and ages the index does not know: NULLs in the fact rows (masked
    values in the copy's columns)."""
    return [
        SyntheticPatient(
            f"unknown{number}",
            None,
            [
                SyntheticStudy(
                    age=None,
                    findings=[SyntheticFinding(NODULE, 9.0 + number), SyntheticFinding(MASS)],
                )
                for _ in range(2)
            ],
        )
        for number in range(4)
    ]


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


def _last_change(index: FindingsIndex) -> int:
    return int(index.database.query("SELECT MAX(change_id) FROM index_changes")[0][0])


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


def test_writes_after_the_copy_are_in_the_next_answer(site: Site) -> None:
    index = site.open()
    try:
        write_patients(index, _more_patients("NEW"))
        # A report sent again with other findings replaces its rows (same patient and study).
        replaced = _more_patients("NEW")[:1]
        replaced[0].studies[0].findings = [SyntheticFinding(NODULE, 25.0)]
        write_patients(index, replaced)
        _assert_same_everywhere(index)
        assert index.copy is not None and index.copy.mark() == _last_change(index)
    finally:
        index.close()


def test_a_restarted_gateway_catches_up_without_building_again(site: Site) -> None:
    site.open().close()
    # Written while no copy was open (the CLI's `fedgate index sync`, say).
    index = site.open(copy=False)
    write_patients(index, _more_patients("SYNC"))
    index.close()
    index = site.open(copy=False)
    try:
        copy = index.use_columnar_copy()
        assert copy is not None and copy.ready, "caught up at once, not built again"
        _assert_same_everywhere(index)
    finally:
        index.close()


def test_changes_pruned_past_the_mark_build_the_copy_again(site: Site) -> None:
    index = site.open()
    try:
        write_patients(index, _more_patients("A"))
        write_patients(index, _more_patients("B"))
        # Another pruner forgot changes the copy had not applied yet.
        last = _last_change(index)
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


def test_a_second_replica_sees_the_first_ones_writes(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """Two gateways on one PostgreSQL index, each with its copy in its own data_dir."""
    url = _fresh_database(postgres)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = Site(first_dir, IndexSettings(url=url)).open()
    # The replicas share the salt, as a deployment's do (docs/deploy.md).
    shutil.copy(first_dir / "index-salt", second_dir / "index-salt")
    second = Site(second_dir, IndexSettings(url=url)).open()
    try:
        write_patients(first, mixed_patients(19))
        write_patients(second, _more_patients("SECOND"))
        _assert_same_everywhere(first)
        _assert_same_everywhere(second)
        write_patients(first, _more_patients("FIRST"))
        _assert_same_everywhere(second)
    finally:
        first.close()
        second.close()


def test_an_index_older_than_its_copy_builds_the_copy_again(tmp_path: Path) -> None:
    site, backup = tmp_path / "site", tmp_path / "backup"
    site.mkdir()
    backup.mkdir()
    index = FindingsIndex.open(IndexSettings(), site)
    write_patients(index, mixed_patients(19))
    index.database.query("PRAGMA wal_checkpoint(TRUNCATE)")
    index.close()
    shutil.copy(site / SQLITE_FILE_NAME, backup / SQLITE_FILE_NAME)
    index = Site(site, IndexSettings()).open()
    write_patients(index, _more_patients("LOST"))
    _assert_same_everywhere(index)  # the copy now holds them
    index.close()
    # The index restored from the backup: the copy holds patients it no longer has.
    for suffix in ("-wal", "-shm"):
        (site / (SQLITE_FILE_NAME + suffix)).unlink(missing_ok=True)
    shutil.copy(backup / SQLITE_FILE_NAME, site / SQLITE_FILE_NAME)
    index = Site(site, IndexSettings()).open()
    try:
        _assert_same_everywhere(index)
    finally:
        index.close()


def test_a_damaged_copy_is_built_again(site: Site) -> None:
    site.open().close()
    (site.folder / COPY_FILE_NAME).write_bytes(b"not a DuckDB file" * 100)
    index = site.open()
    try:
        _assert_same_everywhere(index)
    finally:
        index.close()


def test_no_copy_when_turned_off(site: Site) -> None:
    index = FindingsIndex.open(
        site.settings.model_copy(update={"columnar_copy": False}), site.folder
    )
    try:
        assert index.use_columnar_copy() is None
        assert not (site.folder / COPY_FILE_NAME).exists()
        # The index answers by column too.
        for text, params in QUERIES[:40]:
            rows = index.database.query(text, params)
            columns = index.analytic_columns(text, params)
            assert Counter(zip(*columns, strict=True)) == Counter(rows)
    finally:
        index.close()


class _NoNoise:
    """The noise mechanism's interface, releasing every count as it is: the tables' own
    arithmetic (cells, patient bounds, merged values, totals) is then comparable."""

    delta = 0.0

    def release(self, values: list[float], sensitivity: Any, epsilon: float) -> Any:
        return SimpleNamespace(values=list(values), half_width=0.0)

    def release_open(
        self, counts: dict[str, float], sensitivity: Any, epsilon: float
    ) -> tuple[dict[str, float], float, float]:
        return dict(counts), 0.0, 0.0


@contextlib.contextmanager
def _without_copy(index: FindingsIndex) -> Iterator[None]:
    copy, index.copy = index.copy, None
    try:
        yield
    finally:
        index.copy = copy


def test_every_table_is_the_same_from_the_copy_and_from_the_index(copied: FindingsIndex) -> None:
    # The copy's columns are NumPy arrays (masked where NULL), the index's Python values: the
    # cells, both exact (suppressed at k=2) and noisy (without the noise), must not differ.
    noisy = NoisyAnswers(copied, DifferentialPrivacySettings())
    noisy.noise = _NoNoise()  # type: ignore[assignment]
    compared = 0
    for cohort, level, table in itertools.product(COHORTS, LEVELS, TABLES):
        request = table_request(cohort, level, table)

        def membership(request: AggregateRequest = request) -> Membership:
            sql = membership_sql(request.cohort, request.level)
            rows = copied.database.query(sql.text, sql.params)
            return Membership.from_pairs(request.level, [(row[0], row[-1]) for row in rows])

        def answers(request: AggregateRequest = request) -> tuple[dict[str, Any], dict[str, Any]]:
            return (
                exact_table(copied, request, membership, 2),
                noisy.table(request, membership, 1.0),
            )

        with _without_copy(copied):
            from_the_index = answers()
        assert answers() == from_the_index, (cohort, level, table)
        compared += 1
    assert compared == len(COHORTS) * len(LEVELS) * len(TABLES)
