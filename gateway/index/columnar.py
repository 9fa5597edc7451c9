"""A columnar copy of the findings index, for the federated API's reads (issue 19, item 2).

The index (SQLite) stays the record: every write goes there, in one transaction, as before.
Beside it, in ``findings-index.duckdb``, DuckDB keeps a copy of the tables a cohort reads
(studies, series, reports, findings, measurements, qualitative, study_measurements) and
answers the federated API's SQL over it, a column at a time: 3-4x faster than SQLite's row at
a time on the same SQL at 1,000,000 findings (docs/benchmarks.md). The budget ledger, the
answer cache and the audit log stay in the index.

How the copy stays current: each write of the index also records the studies it touched in
``index_changes`` (same transaction). Before a read, the copy takes the changes after its mark
and replaces those studies' rows with the index's, then moves its mark, in one DuckDB
transaction: a crash between the two databases leaves a copy that replays the same changes
(replacing a study's rows is idempotent). A copy that cannot catch up (the file is new or
damaged, the changes it needs were pruned, the index was restored from an older backup, its
schema changed) is built again from the index, in a background thread; until it is ready the
index answers, as it did before the copy existed. So an answer never comes from a copy older
than the index.

Only for the embedded (SQLite) index: DuckDB's file belongs to one process, and so does the
SQLite index. The other readers of the index (``fedgate learn site``, the CLI) read SQLite.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)

COPY_FILE_NAME = "findings-index.duckdb"

#: The copy's layout; a copy of another version is built again.
COPY_VERSION = 1

#: The tables a cohort's SQL reads, and how each is tied to a study (qualitative rows through
#: their finding's).
TABLES = (
    "studies",
    "series",
    "reports",
    "findings",
    "measurements",
    "qualitative",
    "study_measurements",
)

#: Past this many changed studies, building the copy again is cheaper than replacing them.
REBUILD_AFTER_CHANGES = 50_000

#: Rows handed from SQLite to DuckDB at a time while building (about 50 MB of Python objects).
BUILD_CHUNK_ROWS = 200_000

#: Study keys per replaced chunk (SQLite's default limit of bound parameters is 32,766).
STUDY_CHUNK = 500

_DUCKDB_TYPES = {"INTEGER": "BIGINT", "BIGINT": "BIGINT", "TEXT": "VARCHAR", "REAL": "DOUBLE"}


def _all_rows(result: Any) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = result.fetchall()
    return rows


def _all_columns(result: Any) -> list[np.ndarray]:
    return list(result.fetchnumpy().values())


def _columns(source: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a table of the index, from SQLite's own description of it."""
    rows = source.execute(f"PRAGMA table_info({table})").fetchall()
    return [(row[1], _DUCKDB_TYPES.get(str(row[2]).upper(), "VARCHAR")) for row in rows]


def _study_filter(table: str, marks: str) -> str:
    """The rows of ``table`` that belong to the studies bound to ``marks``."""
    if table == "qualitative":
        return f"finding_key IN (SELECT finding_key FROM findings WHERE study_key IN ({marks}))"
    return f"study_key IN ({marks})"


class ColumnarCopy:
    """The DuckDB copy of one SQLite findings index, and the SQL it answers."""

    def __init__(self, index_path: Path, copy_path: Path, memory_limit_mb: int = 64):
        import duckdb  # imported only where the copy is used: the CLI's commands never load it

        self.index_path = index_path
        self.copy_path = copy_path
        self._duckdb = duckdb
        self._lock = threading.Lock()
        self._ready = False
        self._known_mark: int | None = None
        self._building: threading.Thread | None = None
        try:
            self._connection = duckdb.connect(str(copy_path))
        except duckdb.Error as error:
            # A damaged copy is only a copy: start it again from the index.
            log.warning("index.copy_unreadable", path=str(copy_path), error=str(error))
            for path in (copy_path, copy_path.with_name(copy_path.name + ".wal")):
                path.unlink(missing_ok=True)
            self._connection = duckdb.connect(str(copy_path))
        # Bounded, so that a site of ten million findings keeps the copy on disk and the
        # gateway's memory where it was (the OS caches the file); two threads at most, the
        # cores the gateway's other work needs too.
        self._connection.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
        self._connection.execute("SET threads = 2")
        self._connection.execute("SET preserve_insertion_order = false")

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, index_path: Path, memory_limit_mb: int = 64) -> ColumnarCopy:
        """The copy beside ``index_path``; current at once if it can catch up, else built in a
        background thread (:attr:`ready` tells when)."""
        copy = cls(index_path, index_path.with_name(COPY_FILE_NAME), memory_limit_mb)
        if copy._catch_up():
            copy._ready = True
        else:
            copy.build_in_background()
        return copy

    @property
    def ready(self) -> bool:
        return self._ready

    def _source(self) -> sqlite3.Connection:
        """A read-only connection of its own: building the copy holds a read transaction of
        SQLite (a consistent snapshot under WAL) and must not hold up the index's writes."""
        connection = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True, timeout=30)
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    def _mark(self) -> int | None:
        """The copy's mark: kept in memory once read (only this object moves it), since a
        DuckDB query costs about a millisecond and each answer asks."""
        if self._known_mark is None:
            self._known_mark = self._read_mark()
        return self._known_mark

    def _read_mark(self) -> int | None:
        try:
            row = self._connection.execute("SELECT version, mark FROM copy_state").fetchone()
        except self._duckdb.Error:
            return None
        if row is None or row[0] != COPY_VERSION:
            return None
        return int(row[1])

    # -- keeping current ---------------------------------------------------------------------

    def _catch_up(self) -> bool:
        """Apply the index's changes after the copy's mark; False if the copy must be built
        again instead."""
        mark = self._mark()
        if mark is None:
            return False
        source = self._source()
        try:
            source.execute("BEGIN")
            first, last = source.execute(
                "SELECT MIN(change_id), MAX(change_id) FROM index_changes"
            ).fetchone()
            if last is None:
                # Nothing written since the index was made (or migrated): current only if the
                # copy holds nothing written either.
                return mark == 0
            if last == mark:
                return True
            if last < mark or first > mark + 1:
                # An index older than the copy (restored), or changes pruned past the mark.
                log.info("index.copy_stale", mark=mark, first_change=first, last_change=last)
                return False
            studies = [
                int(row[0])
                for row in source.execute(
                    "SELECT DISTINCT study_key FROM index_changes WHERE change_id > ?", (mark,)
                )
            ]
            if len(studies) > REBUILD_AFTER_CHANGES:
                return False
            self._replace_studies(source, studies, last)
            return True
        finally:
            source.close()

    def _replace_studies(self, source: sqlite3.Connection, studies: list[int], mark: int) -> None:
        """Replace the copy's rows of ``studies`` with the index's and move the mark, in one
        DuckDB transaction (``source`` is inside a read transaction)."""
        copy = self._connection
        copy.execute("BEGIN TRANSACTION")
        try:
            for start in range(0, len(studies), STUDY_CHUNK):
                chunk = studies[start : start + STUDY_CHUNK]
                marks = ", ".join("?" for _ in chunk)
                # Qualitative rows first: they find their studies through the findings.
                qualitative = _study_filter("qualitative", marks)
                copy.execute(f"DELETE FROM qualitative WHERE {qualitative}", chunk)
                for table in TABLES:
                    if table != "qualitative":
                        copy.execute(f"DELETE FROM {table} WHERE study_key IN ({marks})", chunk)
                for table in TABLES:
                    cursor = source.execute(
                        f"SELECT * FROM {table} WHERE {_study_filter(table, marks)}", chunk
                    )
                    self._append(table, cursor)
            copy.execute("UPDATE copy_state SET mark = ?", (mark,))
            copy.execute("COMMIT")
            self._known_mark = mark
        except BaseException:
            copy.execute("ROLLBACK")
            raise

    def _append(self, table: str, cursor: sqlite3.Cursor) -> int:
        """Insert a SQLite cursor's rows into the copy's ``table``, a chunk at a time, as
        columns (DuckDB reads a dict of NumPy arrays without a row loop in Python)."""
        names = [column[0] for column in cursor.description]
        count = 0
        while rows := cursor.fetchmany(BUILD_CHUNK_ROWS):
            chunk = {
                name: np.array(values, dtype=object)
                for name, values in zip(names, zip(*rows, strict=True), strict=True)
            }
            self._connection.register("_index_rows", chunk)
            try:
                self._connection.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) "
                    f"SELECT {', '.join(names)} FROM _index_rows"
                )
            finally:
                self._connection.unregister("_index_rows")
            count += len(rows)
        return count

    # -- building ------------------------------------------------------------------------------

    def build(self) -> None:
        """Copy every table of the index, from one snapshot of it, and set the mark to the
        last change that snapshot holds."""
        started = time.perf_counter()
        source = self._source()
        copy = self._connection
        try:
            source.execute("BEGIN")
            (mark,) = source.execute(
                "SELECT COALESCE(MAX(change_id), 0) FROM index_changes"
            ).fetchone()
            # The mark goes first and comes back last: a build that stops half-way leaves a
            # copy without one, which is built again. Each chunk commits on its own (one
            # transaction for the whole copy held every row in memory: 1.3 GB at 1M findings).
            self._known_mark = None
            copy.execute("DROP TABLE IF EXISTS copy_state")
            rows = {}
            for table in TABLES:
                copy.execute(f"DROP TABLE IF EXISTS {table}")
                columns = ", ".join(f"{name} {kind}" for name, kind in _columns(source, table))
                copy.execute(f"CREATE TABLE {table} ({columns})")
                rows[table] = self._append(table, source.execute(f"SELECT * FROM {table}"))
            copy.execute("CREATE TABLE copy_state (version INTEGER, mark BIGINT)")
            copy.execute("INSERT INTO copy_state VALUES (?, ?)", (COPY_VERSION, mark))
            self._known_mark = mark
            copy.execute("CHECKPOINT")
        finally:
            source.close()
        log.info(
            "index.copy_built",
            seconds=round(time.perf_counter() - started, 2),
            mark=mark,
            **{f"{table}_rows": count for table, count in rows.items()},
        )

    def build_in_background(self) -> None:
        def run() -> None:
            try:
                with self._lock:
                    self.build()
                    # Changes written while it was built.
                    self._ready = self._catch_up()
            except Exception:
                log.exception("index.copy_build_failed")

        self._building = threading.Thread(target=run, name="fedgate-index-copy", daemon=True)
        self._building.start()

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        if self._building is not None:
            self._building.join(timeout)
        return self._ready

    # -- reading -------------------------------------------------------------------------------

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]] | None:
        """The rows of a SELECT over the copy, once current; None while the copy is being
        built or cannot catch up (then the caller asks the index itself)."""
        rows: list[tuple[Any, ...]] | None = self._run(statement, params, _all_rows)
        return rows

    def query_columns(self, statement: str, params: Sequence[Any] = ()) -> list[np.ndarray] | None:
        """:meth:`query`'s answer by column, as NumPy arrays (masked where NULL): a fact row
        per cohort member is then never a Python tuple (60,597 rows: 27 -> 11 ms of CPU)."""
        columns: list[np.ndarray] | None = self._run(statement, params, _all_columns)
        return columns

    def _run(self, statement: str, params: Sequence[Any], fetch: Callable[[Any], Any]) -> Any:
        if not self._ready:
            return None
        with self._lock:
            if not self._ready:
                return None
            if not self._catch_up():
                self._ready = False
                self.build_in_background()  # its thread waits for this lock
                return None
            try:
                return fetch(self._connection.execute(statement, list(params)))
            except self._duckdb.Error as error:
                # SQL the copy's engine reads otherwise than the index's (the tests hold every
                # query the compiler writes to the same rows on both): the index answers.
                log.warning("index.copy_query_failed", error=str(error))
                return None

    def mark(self) -> int | None:
        """The last change of the index the copy holds (None before it is built)."""
        with self._lock:
            return self._mark()

    def close(self) -> None:
        if self._building is not None:
            self._building.join()
        with self._lock:
            self._connection.close()
