"""One small connection wrapper over SQLite (default) and PostgreSQL (``index.url``).

SQL is written once, with ``?`` placeholders and the subset both engines share (``ON CONFLICT``
upserts, window functions, ``EXISTS``); :meth:`Database.sql` rewrites placeholders for psycopg.
A lock serialises use of the one connection: the gateway calls the index from worker threads.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchone(self) -> Any: ...


class Database:
    """A connection, its dialect, and a lock."""

    def __init__(self, connection: Any, dialect: Dialect):
        self._connection = connection
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

        connection = psycopg.connect(url, autocommit=True)
        return cls(connection, "postgresql")

    def sql(self, statement: str) -> str:
        if self.dialect == "postgresql":
            return statement.replace("?", "%s")
        return statement

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error."""
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN")
            try:
                yield _Translating(cursor, self)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            else:
                cursor.execute("COMMIT")
            finally:
                cursor.close()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a lock named ``name`` across processes sharing this database.

        PostgreSQL: a session advisory lock, so that replicas of a gateway serialise on it.
        SQLite: one process owns the file, whose callers serialise in-process already.
        """
        if self.dialect != "postgresql":
            yield
            return
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._locker_lock:
            if self._locker is None:
                # A connection of its own: the shared one stays free for the work done under
                # the lock (and a session lock does not exclude its own session).
                import psycopg

                info = self._connection.info
                self._locker = psycopg.connect(info.dsn, password=info.password, autocommit=True)
            self._locker.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                self._locker.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            cursor = self._connection.cursor()
            try:
                cursor.execute(self.sql(statement), tuple(params))
                # Both drivers' rows are tuples already (no row factory is set).
                rows: list[Row] = cursor.fetchall()
                return rows
            finally:
                cursor.close()

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        with self.transaction() as cursor:
            cursor.execute(statement, params)

    def close(self) -> None:
        with self._lock:
            self._connection.close()
            if self._locker is not None:
                self._locker.close()


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
