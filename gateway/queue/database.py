"""The queue's database connection: SQLite in data_dir, or a shared PostgreSQL server."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.database_wait import DatabaseDisconnected, connection_lost, reconnect
from gateway.queue.dialect import POSTGRESQL, SQLITE, Dialect
from gateway.queue.migrations import migrate
from gateway.queue.settings import QueueSettings


class Database:
    """One connection, used under a lock; every use is one transaction."""

    def __init__(self, connect: Callable[[], Any], dialect: Dialect, settings: QueueSettings):
        self._connect = connect
        self.dialect = dialect
        self.settings = settings
        self._lock = threading.Lock()
        self._connection = connect()
        self._lost = False  # the last use found the connection dropped
        migrate(self)

    @classmethod
    def open(cls, settings: QueueSettings, data_dir: Path) -> Database:
        if settings.url is None:
            path = data_dir / "queue.sqlite"
            path.parent.mkdir(parents=True, exist_ok=True)

            def connect_sqlite() -> sqlite3.Connection:
                connection = sqlite3.connect(path, check_same_thread=False, timeout=30)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                connection.execute("PRAGMA foreign_keys=ON")
                return connection

            return cls(connect_sqlite, SQLITE, settings)
        import psycopg  # only when PostgreSQL is configured

        url = settings.url

        def connect_postgresql() -> Any:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)

        return cls(connect_postgresql, POSTGRESQL, settings)

    def close(self) -> None:
        # A dropped connection is closed already.
        with self._lock, contextlib.suppress(Exception):
            self._connection.close()

    def _live(self) -> Any:
        """The connection, a new one if the last use found it dropped (under the lock)."""
        if self._lost:
            self._connection = reconnect(self._connect, "queue.url")
            self._lost = False
        return self._connection

    def _dropped(self, error: BaseException) -> bool:
        """Whether ``error`` lost the connection; if so the next use opens a new one."""
        if self.dialect is POSTGRESQL and connection_lost(self._connection, error):
            self._lost = True
            with contextlib.suppress(Exception):
                self._connection.close()
        return self._lost

    @contextmanager
    def advisory_lock(self, key: int) -> Iterator[None]:
        """A PostgreSQL session lock, held across transactions until the block ends."""
        with self.transaction() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            with self._lock:
                try:
                    cursor = self._live().cursor()
                    cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except Exception as error:
                    # A session lock ends with its session: a dropped one holds nothing.
                    if not self._dropped(error):
                        raise

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One write transaction, committed when the block ends, rolled back on an error.

        A connection found dropped (the database restarted, failed over, or ended this
        session) is replaced: at ``BEGIN``, before the block, by a new one and the ``BEGIN``
        sent again (nothing was done yet); inside the block, its work was rolled back by the
        server, so :class:`DatabaseDisconnected` is raised and the next transaction opens a
        new connection. The block is never run twice (a generator context manager yields
        once): the caller, who knows whether its work can be repeated, retries it.
        """
        with self._lock:
            try:
                cursor = self._begin()
            except Exception as error:
                if not self._dropped(error):
                    raise
                cursor = self._begin()
            try:
                yield cursor
                if self.dialect is SQLITE:
                    self._connection.commit()
                else:
                    cursor.execute("COMMIT")
            except BaseException as error:
                with contextlib.suppress(Exception):  # the connection itself may be gone
                    if self.dialect is SQLITE:
                        self._connection.rollback()
                    else:
                        cursor.execute("ROLLBACK")
                if self._dropped(error):
                    raise DatabaseDisconnected(
                        f"queue.url: the connection to PostgreSQL dropped ({error}); the "
                        "transaction was rolled back, the next one reconnects"
                    ) from error
                raise

    def _begin(self) -> Any:
        # PostgreSQL's connection is in autocommit mode, its transactions explicit: a
        # dropped connection shows at this BEGIN, before the caller's block runs.
        cursor = self._live().cursor()
        cursor.execute("BEGIN IMMEDIATE" if self.dialect is SQLITE else "BEGIN")
        return cursor
