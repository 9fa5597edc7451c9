"""The queue's database connection: SQLite in data_dir, or a shared PostgreSQL server."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
            return psycopg.connect(url, connect_timeout=10)

        return cls(connect_postgresql, POSTGRESQL, settings)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextmanager
    def advisory_lock(self, key: int) -> Iterator[None]:
        """A PostgreSQL session lock, held across transactions until the block ends."""
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("SELECT pg_advisory_lock(%s)", (key,))
            self._connection.commit()
        try:
            yield
        finally:
            with self._lock:
                cursor = self._connection.cursor()
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
                self._connection.commit()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One write transaction; retried once on a dropped PostgreSQL connection."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    cursor = self._connection.cursor()
                    if self.dialect is SQLITE:
                        cursor.execute("BEGIN IMMEDIATE")
                    yield cursor
                    self._connection.commit()
                    return
                except BaseException as error:
                    with contextlib.suppress(Exception):  # the connection itself may be gone
                        self._connection.rollback()
                    if attempt == 1 and _is_disconnect(error) and self.dialect is POSTGRESQL:
                        self._connection = self._connect()
                        continue
                    raise


def _is_disconnect(error: BaseException) -> bool:
    name = type(error).__name__
    return (name in ("OperationalError", "InterfaceError") and "closed" in str(error).lower()) or (
        name == "OperationalError" and "terminat" in str(error).lower()
    )
