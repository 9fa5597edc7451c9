"""One schema-migration runner for every database the gateway keeps (SQLite or PostgreSQL).

The job queue (:mod:`gateway.queue`), the findings index (:mod:`gateway.index`) and the
embedded store's catalog (:mod:`gateway.store.catalog`) each bring their numbered migrations;
this module applies them. Each migration is applied once, in order, inside one transaction
with its record, so a crash leaves either the old schema or the new one. A database written
by a newer fedgate (a version this code does not know) is refused rather than guessed at.

Versions are kept per component in one table, ``fedgate_schema``, so that components sharing
one PostgreSQL database (``queue.url`` and ``index.url`` may name the same one) never read
each other's versions. Databases written before this runner existed recorded their versions
in a table of their own (``schema_migrations``, or the catalog's ``schema_version``); those
versions are adopted the first time the new runner opens the database, so nothing is applied
twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, Protocol

DialectName = Literal["sqlite", "postgresql"]

#: The table every component records its applied migrations in.
VERSION_TABLE = "fedgate_schema"


class Cursor(Protocol):
    """A DB-API cursor that takes ``?`` placeholders (the callers translate for psycopg)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class Migration:
    """One schema change: ``statements`` already written for the database's dialect."""

    version: int
    name: str
    statements: tuple[str, ...]


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this version of fedgate."""


def migrate(
    component: str,
    migrations: Sequence[Migration],
    transaction: Callable[[], AbstractContextManager[Cursor]],
    dialect: DialectName,
    *,
    legacy_table: str | None = None,
    exclusive: AbstractContextManager[Any] | None = None,
    upgrade_hint: str = "upgrade fedgate",
) -> int:
    """Apply every migration of ``component`` not yet applied; return the version now in force.

    ``transaction`` opens one transaction and yields its cursor (committed when the block ends
    without an exception). ``exclusive``, held around the whole run, keeps replicas starting
    together on one PostgreSQL from applying a migration twice. ``legacy_table`` names the
    table this component recorded its versions in before this runner existed.
    """
    versions = [migration.version for migration in migrations]
    if versions != sorted(set(versions)) or not versions or versions[0] < 1:
        raise ValueError(f"{component}: migrations must be numbered 1, 2, ... without repeats")
    latest = versions[-1]
    with exclusive if exclusive is not None else nullcontext():
        with transaction() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
                "component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, "
                "applied_at TEXT NOT NULL, PRIMARY KEY (component, version))"
            )
            applied = _applied(cursor, component)
            if not applied and legacy_table and _table_exists(cursor, dialect, legacy_table):
                applied = _adopt(cursor, component, legacy_table, migrations)
        unknown = sorted(applied - set(versions))
        if unknown:
            raise SchemaError(
                f"the {component} database has schema version {unknown[-1]}, newer than this "
                f"fedgate knows ({latest}); {upgrade_hint}"
            )
        for migration in migrations:
            if migration.version in applied:
                continue
            with transaction() as cursor:
                for statement in migration.statements:
                    cursor.execute(statement)
                _record(cursor, component, migration.version, migration.name)
    return latest


def split_statements(sql: str) -> list[str]:
    """The statements of an SQL script (``;``-separated, ``--`` comment lines dropped)."""
    without_comments = "\n".join(
        line for line in sql.splitlines() if not line.lstrip().startswith("--")
    )
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]


def _applied(cursor: Cursor, component: str) -> set[int]:
    cursor.execute(f"SELECT version FROM {VERSION_TABLE} WHERE component = ?", (component,))
    return {int(row[0]) for row in cursor.fetchall()}


def _record(cursor: Cursor, component: str, version: int, name: str) -> None:
    cursor.execute(
        f"INSERT INTO {VERSION_TABLE} (component, version, name, applied_at) VALUES (?, ?, ?, ?)",
        (component, version, name, dt.datetime.now(dt.UTC).isoformat()),
    )


def _table_exists(cursor: Cursor, dialect: DialectName, table: str) -> bool:
    if dialect == "sqlite":
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    else:
        cursor.execute(
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
    return bool(cursor.fetchall())


def _adopt(
    cursor: Cursor, component: str, legacy_table: str, migrations: Sequence[Migration]
) -> set[int]:
    """Take over the versions a database recorded before this runner (see the module doc).

    The old runners recorded every version they applied, except the catalog's, which kept
    only the current one; versions up to the highest recorded are all in place either way.
    """
    cursor.execute(f"SELECT max(version) FROM {legacy_table}")
    row = cursor.fetchall()
    highest = int(row[0][0]) if row and row[0][0] is not None else 0
    names = {migration.version: migration.name for migration in migrations}
    adopted = set(range(1, highest + 1))
    for version in sorted(adopted):
        _record(cursor, component, version, names.get(version, f"{version} (from {legacy_table})"))
    return adopted
