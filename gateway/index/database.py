"""One small connection wrapper over SQLite (default) and PostgreSQL (``index.url``).

SQL is written once, with ``?`` placeholders and the subset both engines share (``ON CONFLICT``
upserts, window functions, ``EXISTS``); :meth:`Database.sql` rewrites placeholders for psycopg.
A lock serialises use of the one connection: the gateway calls the index from worker threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from gateway.database_wait import DatabaseDisconnected, connection_lost, reconnect

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchone(self) -> Any: ...


class Database:
    """A connection, its dialect, and a lock."""

    def __init__(self, connection: Any, dialect: Dialect, connect: Callable[[], Any] | None = None):
        self._connection = connection
        # PostgreSQL: how to open a new connection once this one dropped (a server restart,
        # a failover, pg_terminate_backend); the next use after the drop reconnects.
        self._connect = connect
        self._lost = False
        self.dialect: Dialect = dialect
        self._lock = threading.RLock()
        self._locker: Any = None  # PostgreSQL connection holding advisory locks
        self._locker_lock = threading.Lock()

    @classmethod
    def sqlite(cls, path: Path) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode; the index can be rebuilt
        # from the PACS anyway (``fedgate index sync``), so an OS crash costs only a re-sync.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA cache_size=-131072")  # 128 MiB of page cache
        connection.execute("PRAGMA temp_store=MEMORY")
        # Reads straight from the mapped file, without copying pages into SQLite's cache.
        connection.execute("PRAGMA mmap_size=4294967296")
        connection.execute("PRAGMA busy_timeout=30000")
        return cls(connection, "sqlite")

    @classmethod
    def postgresql(cls, url: str) -> Database:
        import psycopg  # imported only when configured: SQLite sites never load it

        def connect() -> Any:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)

        return cls(connect(), "postgresql", connect)

    def sql(self, statement: str) -> str:
        if self.dialect == "postgresql":
            return statement.replace("?", "%s")
        return statement

    def _live(self) -> Any:
        """The connection, a new one if the last use found it dropped (under the lock)."""
        if self._lost and self._connect is not None:
            self._connection = reconnect(self._connect, "index.url")
            self._lost = False
        return self._connection

    def _dropped(self, error: BaseException) -> bool:
        """Whether ``error`` lost the connection; if so the next use opens a new one."""
        if self._connect is not None and connection_lost(self._connection, error):
            self._lost = True
            with contextlib.suppress(Exception):
                self._connection.close()
        return self._lost

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error.

        A connection found dropped at ``BEGIN`` is replaced and the ``BEGIN`` sent again
        (nothing was done yet); one that drops inside the block lost its transaction on the
        server's side: :class:`DatabaseDisconnected` is raised, the next use reconnects. The
        block runs once (a generator context manager yields once); its caller retries it.
        """
        with self._lock:
            try:
                cursor = self._live().cursor()
                cursor.execute("BEGIN")
            except Exception as error:
                if not self._dropped(error):
                    raise
                cursor = self._live().cursor()
                cursor.execute("BEGIN")
            try:
                yield _Translating(cursor, self)
                cursor.execute("COMMIT")
            except BaseException as error:
                with contextlib.suppress(Exception):  # the connection itself may be gone
                    cursor.execute("ROLLBACK")
                if self._dropped(error):
                    raise DatabaseDisconnected(
                        f"index.url: the connection to PostgreSQL dropped ({error}); the "
                        "transaction was rolled back, the next one reconnects"
                    ) from error
                raise
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a lock named ``name`` across processes sharing this database.

        PostgreSQL: a session advisory lock, so that replicas of a gateway serialise on it,
        on a connection of its own, opened again when it dropped (its locks went with it).
        SQLite: one process owns the file, whose callers serialise in-process already.
        """
        if self.dialect != "postgresql":
            yield
            return
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._locker_lock:
            for attempt in (1, 2):  # before the block: a dropped connection costs nothing
                if self._locker is None:
                    # A connection of its own: the shared one stays free for the work done
                    # under the lock (and a session lock does not exclude its own session).
                    assert self._connect is not None
                    self._locker = reconnect(self._connect, "index.url")
                try:
                    self._locker.execute("SELECT pg_advisory_lock(%s)", (key,))
                    break
                except Exception as error:
                    if attempt == 2 or not connection_lost(self._locker, error):
                        raise
                    self._drop_locker()
            try:
                yield
            finally:
                try:
                    self._locker.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except Exception as error:
                    # A session lock ends with its session: a dropped one holds nothing.
                    if not connection_lost(self._locker, error):
                        raise
                    self._drop_locker()

    def _drop_locker(self) -> None:
        with contextlib.suppress(Exception):
            self._locker.close()
        self._locker = None

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """The rows of a read; retried once on a new connection if the connection dropped
        (a read has no effect to repeat)."""
        with self._lock:
            for attempt in (1, 2):
                cursor = self._live().cursor()
                try:
                    cursor.execute(self.sql(statement), tuple(params))
                    # Both drivers' rows are tuples already (no row factory is set).
                    rows: list[Row] = cursor.fetchall()
                    return rows
                except Exception as error:
                    if attempt == 2 or not self._dropped(error):
                        raise
                finally:
                    with contextlib.suppress(Exception):
                        cursor.close()
            raise AssertionError("unreachable")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        with self.transaction() as cursor:
            cursor.execute(statement, params)

    def close(self) -> None:
        # A dropped connection is closed already.
        with self._lock:
            with contextlib.suppress(Exception):  # a dropped connection is closed already
                self._connection.close()
            if self._locker is not None:
                self._drop_locker()


class _Translating:
    """A cursor that rewrites ``?`` placeholders for the connection's dialect."""

    def __init__(self, cursor: Any, database: Database):
        self._cursor = cursor
        self._database = database

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(self._database.sql(sql), tuple(params))

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any:
        return self._cursor.executemany(self._database.sql(sql), [tuple(p) for p in params])

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    def fetchone(self) -> Any:
        return self._cursor.fetchone()
