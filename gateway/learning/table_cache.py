"""A site's training table, built once per run instead of once per message (issue 16).

Every message of a run (the standardisation query, each round's ``train``, the ``evaluate``)
needs the same table, and building it from the findings index is most of a task's own work
(about 0.3 s at 1,000 patients; a round's training step takes milliseconds). Each message runs
in a child the site's executor forks (:mod:`gateway.learning.executor`), so a table kept in the
child's memory is gone with it. Instead the child hands the table it built to its executor over
a pipe (:func:`publish`, :func:`receive`), and the executor keeps it in its own memory, which
the next children inherit with the fork.

A table is reused only under the same key: the same run (Flower's run id), the same plan (its
sha256) and the same findings index, as far as :func:`index_state` can tell: the SQLite file's
and its write-ahead log's identity, size and modification time, which every committed write
changes; for a PostgreSQL index, the last entry of its change log (``index_changes``, which
every write of the index adds to). Any other key builds the table again (and replaces the one
kept: one run at a time).

The table never leaves the site: the pipe joins the executor and its own child, on this machine.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from gateway.index import FindingsIndex, IndexSettings
from gateway.index.findings_index import SQLITE_FILE_NAME
from gateway.learning.plan import LoadedPlan
from gateway.learning.table import SiteTable, site_table

__all__ = ["IndexState", "TableKey", "cached_site_table", "index_state", "publish", "receive"]


#: Per file of the SQLite index: (name, device, inode, size, mtime in ns).
IndexState = tuple[tuple[str, int, int, int, int], ...]


@dataclass(frozen=True)
class TableKey:
    """What a kept table is valid for."""

    run_id: int
    plan_sha256: str
    index: IndexState


#: The table kept for the current run (in the executor; inherited by each forked child).
_kept: tuple[TableKey, SiteTable] | None = None
#: A table this process built and has not handed to its executor yet.
_built: tuple[TableKey, SiteTable] | None = None


def index_state(settings: IndexSettings, data_dir: Path) -> IndexState:
    """A marker that changes whenever a write is committed to the site's index: for the SQLite
    file and its write-ahead log, (name, device, inode, size, mtime in ns); for PostgreSQL, its
    change log's last id (one query, against about 0.3 s for the table at 1,000 patients)."""
    if settings.url:
        import psycopg

        with psycopg.connect(settings.url, connect_timeout=10) as connection:
            row = connection.execute("SELECT MAX(change_id) FROM index_changes").fetchone()
        return (("index_changes", 0, 0, 0, int(row[0] or 0) if row else 0),)
    state = []
    for name in (SQLITE_FILE_NAME, SQLITE_FILE_NAME + "-wal"):
        try:
            found = os.stat(data_dir / name)
        except FileNotFoundError:
            continue
        state.append((name, found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns))
    return tuple(state)


def cached_site_table(
    settings: IndexSettings, data_dir: Path, loaded: LoadedPlan, run_id: int
) -> SiteTable:
    """The plan's table at this site for run ``run_id``: the kept one if its key still holds,
    else built from the findings index (and noted for :func:`publish`)."""
    global _kept, _built
    key = TableKey(run_id, loaded.sha256, index_state(settings, data_dir))
    if key.index and _kept is not None and _kept[0] == key:
        return _kept[1]
    index = FindingsIndex.open(settings, data_dir)
    try:
        table = site_table(index, loaded.plan)
    finally:
        index.close()
    if key.index:
        _kept = _built = (key, table)
    return table


def publish(pipe: int) -> None:
    """In an executor's child: write the table it built (if any) to ``pipe`` and close it."""
    global _built
    try:
        if _built is not None:
            data = memoryview(pickle.dumps(_built, protocol=pickle.HIGHEST_PROTOCOL))
            while data:
                data = data[os.write(pipe, data) :]
            _built = None
    finally:
        os.close(pipe)


def receive(data: bytes) -> None:
    """In the executor: keep the table a child wrote (all it wrote to its pipe), for the next
    children. The pipe is the executor's own, shared with its child only: the bytes are what
    :func:`publish` pickled."""
    global _kept
    if data:
        key, table = pickle.loads(data)  # from our own child (see above)
        if isinstance(key, TableKey) and isinstance(table, SiteTable):
            _kept = (key, table)
