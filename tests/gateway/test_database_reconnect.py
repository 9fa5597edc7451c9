"""The queue's and the index's PostgreSQL connections after the server ended them (a restart,
a failover, ``pg_terminate_backend``, a crashed backend): a connection found dropped at the
start of a transaction or a read is replaced and the work goes on; a transaction whose
connection drops inside its block fails cleanly, once, with :class:`DatabaseDisconnected`
and nothing of it written, and the next use reconnects.

A real PostgreSQL server (tests/support/postgres.py), its sessions really terminated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.database_wait import DatabaseDisconnected
from gateway.index.database import Database as IndexDatabase
from gateway.queue.database import Database as QueueDatabase
from gateway.queue.settings import QueueSettings
from tests.support.postgres import PostgresServer


@pytest.fixture()
def notes(postgres: PostgresServer) -> Iterator[str]:
    """A table of this test's own, to see what a transaction left written."""
    with psycopg.connect(postgres.url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS notes")
        connection.execute("CREATE TABLE notes (note text)")
    yield "notes"


def _written(postgres: PostgresServer) -> list[str]:
    with psycopg.connect(postgres.url) as connection:
        return [row[0] for row in connection.execute("SELECT note FROM notes ORDER BY note")]


@pytest.mark.parametrize("drop", ["terminate_backends", "kill_backends"])
def test_a_queue_transaction_whose_connection_drops_fails_once_and_cleanly(
    postgres: PostgresServer, notes: str, tmp_path: Path, drop: str
) -> None:
    """``terminate_backends``: FATAL "terminating connection due to administrator command";
    ``kill_backends``: "server closed the connection unexpectedly", on which the old
    transaction() went on to a second yield (RuntimeError "generator didn't stop after
    throw()")."""
    drop_sessions = getattr(postgres, drop)
    database = QueueDatabase.open(QueueSettings(url=postgres.url), tmp_path)
    try:
        with database.transaction() as cursor:
            cursor.execute("INSERT INTO notes VALUES ('before')")
        bodies = 0
        with (
            pytest.raises(DatabaseDisconnected, match="rolled back"),
            database.transaction() as cursor,
        ):
            bodies += 1
            cursor.execute("INSERT INTO notes VALUES ('lost')")
            assert drop_sessions() >= 1  # in the middle of the transaction
            cursor.execute("INSERT INTO notes VALUES ('lost too')")
        assert bodies == 1  # the block ran once: no "generator didn't stop after throw()"
        # The next transaction opens a new connection and writes.
        with database.transaction() as cursor:
            cursor.execute("INSERT INTO notes VALUES ('after')")
        assert _written(postgres) == ["after", "before"]
        # A drop between two transactions shows at BEGIN, before the block: the transaction
        # goes on on a new connection.
        drop_sessions()
        with database.transaction() as cursor:
            cursor.execute("SELECT count(*) FROM notes")
            assert cursor.fetchone() == (2,)
    finally:
        database.close()


def test_a_queue_error_that_is_not_a_disconnect_is_raised_as_it_is(
    postgres: PostgresServer, notes: str, tmp_path: Path
) -> None:
    database = QueueDatabase.open(QueueSettings(url=postgres.url), tmp_path)
    try:
        with pytest.raises(psycopg.errors.UndefinedTable), database.transaction() as cursor:
            cursor.execute("INSERT INTO no_such_table VALUES (1)")
        with database.transaction() as cursor:  # the same connection, still usable
            cursor.execute("INSERT INTO notes VALUES ('fine')")
        assert _written(postgres) == ["fine"]
    finally:
        database.close()


def test_the_index_reconnects_its_reads_its_writes_and_its_lock(
    postgres: PostgresServer, notes: str
) -> None:
    database = IndexDatabase.postgresql(postgres.url)
    try:
        with database.exclusive("a-lock"):
            database.execute("INSERT INTO notes VALUES (?)", ["before"])
        assert postgres.terminate_backends() == 2  # the index's connection and its lock's
        # A read is retried on a new connection: the caller sees no error.
        assert database.query("SELECT note FROM notes") == [("before",)]
        # The lock's connection is opened again too.
        with database.exclusive("a-lock"):
            database.execute("INSERT INTO notes VALUES (?)", ["after"])
        # A write whose connection drops in its transaction is rolled back and says so.
        with (
            pytest.raises(DatabaseDisconnected, match=r"index\.url"),
            database.transaction() as cursor,
        ):
            cursor.execute("INSERT INTO notes VALUES (?)", ["lost"])
            postgres.terminate_backends()
            cursor.execute("INSERT INTO notes VALUES (?)", ["lost too"])
        assert _written(postgres) == ["after", "before"]
        database.execute("INSERT INTO notes VALUES (?)", ["again"])
        assert _written(postgres) == ["after", "again", "before"]
    finally:
        database.close()


def test_while_the_server_is_away_the_index_says_so_then_reconnects() -> None:
    own = PostgresServer().start()  # its own: this test stops it
    try:
        database = IndexDatabase.postgresql(own.url)
        own.halt()
        with pytest.raises(DatabaseDisconnected, match=r"index\.url"):
            database.query("SELECT 1")
        with pytest.raises(DatabaseDisconnected, match=r"does not answer \(connection refused\)"):
            database.query("SELECT 1")
        own.start()
        assert database.query("SELECT 1") == [(1,)]
        database.close()
    finally:
        own.stop()
