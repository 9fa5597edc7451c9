"""The queue database's migrations (SQLite or PostgreSQL), applied by :mod:`gateway.migrations`.

Each ``migrations/NNNN_name.sql`` file is one migration. The SQL is written once for both
dialects; ``{id}`` and ``{real}`` are the only differences they need.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

from gateway import migrations as runner
from gateway.queue.dialect import Dialect

if TYPE_CHECKING:
    from gateway.queue.database import Database

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
#: The key of the advisory lock replicas take turns on while migrating (PostgreSQL).
_LOCK_KEY = 727100


def available(dialect: Dialect) -> list[runner.Migration]:
    """Every migration shipped with this code, written for ``dialect``, in order."""
    folder = resources.files("gateway.queue") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8").format(id=dialect.id_column, real=dialect.real)
            statements = runner.split_statements(sql)
            found.append(runner.Migration(int(match.group(1)), entry.name, tuple(statements)))
    return sorted(found, key=lambda migration: migration.version)


def migrate(database: Database) -> int:
    """Bring the queue's schema up to date; returns the version now in place."""
    dialect = database.dialect

    @contextmanager
    def transaction() -> Iterator[runner.Cursor]:
        with database.transaction() as cursor:
            yield _Placeholders(cursor, dialect)

    return runner.migrate(
        "queue",
        available(dialect),
        transaction,
        "postgresql" if dialect.name == "postgresql" else "sqlite",
        legacy_table="schema_migrations",
        exclusive=database.advisory_lock(_LOCK_KEY) if dialect.name == "postgresql" else None,
    )


class _Placeholders:
    """A cursor taking ``?`` placeholders whatever the driver wants."""

    def __init__(self, cursor: Any, dialect: Dialect):
        self._cursor = cursor
        self._dialect = dialect

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._cursor.execute(self._dialect.sql(sql), tuple(params))

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())
