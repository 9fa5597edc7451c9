"""One migration runner for the queue, the findings index and the catalog (issue 13, item 11).

The databases in ``tests/data/legacy-v1`` were written by fedgate before the runner was shared
(a gateway that stored a 3-slice study and queued one job): opening them with this code must
keep their rows, apply only what is new, and give the schema a new database gets.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from gateway.index.findings_index import SQLITE_FILE_NAME, FindingsIndex
from gateway.index.settings import IndexSettings
from gateway.migrations import SchemaError
from gateway.queue import Database, QueueSettings
from gateway.store.catalog import Catalog
from tests.support.postgres import PostgresServer

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy-v1"


def versions(path: Path, component: str) -> list[int]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT version FROM fedgate_schema WHERE component = ? ORDER BY version",
            (component,),
        ).fetchall()
    return [row[0] for row in rows]


def columns(path: Path) -> dict[str, list[str]]:
    """Every user table's columns, in order."""
    with sqlite3.connect(path) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "AND name NOT IN ('fedgate_schema', 'schema_migrations', 'schema_version')"
            )
        ]
        return {
            table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            for table in sorted(tables)
        }


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_databases_of_the_previous_runners_upgrade_keeping_their_rows(tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(LEGACY, old)
    before = {
        "queue": count(old / "queue.sqlite", "jobs"),
        "index": count(old / SQLITE_FILE_NAME, "studies"),
        "catalog": count(old / "catalog.sqlite", "instances"),
    }
    assert before == {"queue": 1, "index": 1, "catalog": 3}

    for _ in range(2):  # the second opening applies nothing
        Database.open(QueueSettings(), old).close()
        FindingsIndex.open(IndexSettings(), old).close()
        Catalog.open(old / "catalog.sqlite").close()

    assert count(old / "queue.sqlite", "jobs") == before["queue"]
    assert count(old / SQLITE_FILE_NAME, "studies") == before["index"]
    assert count(old / "catalog.sqlite", "instances") == before["catalog"]
    assert versions(old / "queue.sqlite", "queue") == [1, 2]  # 2 (analyses) applied now
    assert versions(old / SQLITE_FILE_NAME, "index") == [1, 2, 3, 4, 5, 6]  # 3-6 applied now
    assert versions(old / "catalog.sqlite", "catalog") == [1, 2, 3, 4, 5, 6]  # 2-6 applied now

    # The upgraded databases have exactly the tables and columns of new ones.
    new = tmp_path / "new"
    Database.open(QueueSettings(), new).close()
    FindingsIndex.open(IndexSettings(), new).close()
    Catalog.open(new / "catalog.sqlite").close()
    for name in ("queue.sqlite", SQLITE_FILE_NAME, "catalog.sqlite"):
        assert columns(old / name) == columns(new / name), name


def test_a_catalog_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    Catalog.open(tmp_path / "catalog.sqlite").close()
    with sqlite3.connect(tmp_path / "catalog.sqlite") as connection:
        connection.execute("INSERT INTO fedgate_schema VALUES ('catalog', 99, 'future', '')")
    with pytest.raises(SchemaError, match="newer than this fedgate"):
        Catalog.open(tmp_path / "catalog.sqlite")


def test_queue_and_index_share_one_postgresql_database(tmp_path: Path) -> None:
    """``queue.url`` and ``index.url`` may name one database: their versions stay apart."""
    server = PostgresServer().start()
    try:
        for _ in range(2):
            queue = Database.open(QueueSettings(url=server.url), tmp_path)
            index = FindingsIndex.open(IndexSettings(url=server.url), tmp_path)
            index.close()
            queue.close()
        import psycopg

        with psycopg.connect(server.url) as connection:
            rows = connection.execute(
                "SELECT component, version FROM fedgate_schema ORDER BY component, version"
            ).fetchall()
        assert rows == [
            ("index", 1),
            ("index", 2),
            ("index", 3),
            ("index", 4),
            ("index", 5),
            ("index", 6),
            ("queue", 1),
            ("queue", 2),
        ]
    finally:
        server.stop()
