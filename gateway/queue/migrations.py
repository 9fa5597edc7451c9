"""Versioned schema migrations for the queue database (SQLite or PostgreSQL).

Each ``migrations/NNNN_name.sql`` file is applied once, in order, inside a transaction, and
recorded in ``schema_migrations``. A database newer than this code is refused rather than
guessed at. The SQL is written once for both dialects; ``{id}`` and ``{real}`` are the only
differences they need.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from gateway.queue.dialect import Dialect

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with this code, in order."""
    folder = resources.files("gateway.queue") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(connection: Any, dialect: Dialect) -> int:
    """Bring the schema up to date; returns the version now in place."""
    cursor = connection.cursor()
    cursor.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        f"(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at {dialect.real} NOT NULL)"
    )
    connection.commit()
    if dialect.name == "postgresql":
        # Two replicas starting at once must not both apply a migration.
        cursor.execute("SELECT pg_advisory_lock(727100)")
    try:
        cursor.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
        current = int(cursor.fetchone()[0])
        shipped = available()
        newest = shipped[-1][0] if shipped else 0
        if current > newest:
            raise RuntimeError(
                f"the queue database has schema version {current}, newer than this fedgate "
                f"({newest}); upgrade fedgate"
            )
        for version, name, sql in shipped:
            if version <= current:
                continue
            for statement in _statements(sql.format(id=dialect.id_column, real=dialect.real)):
                cursor.execute(statement)
            cursor.execute(
                dialect.sql("INSERT INTO schema_migrations VALUES (?, ?, ?)"),
                (version, name, dialect.now()),
            )
            connection.commit()
            current = version
        return current
    except BaseException:
        connection.rollback()
        raise
    finally:
        if dialect.name == "postgresql":
            cursor.execute("SELECT pg_advisory_unlock(727100)")
            connection.commit()


def _statements(sql: str) -> list[str]:
    without_comments = "\n".join(
        line for line in sql.splitlines() if not line.lstrip().startswith("--")
    )
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]
