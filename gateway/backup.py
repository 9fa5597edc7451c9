"""Backup and restore of a gateway's state: ``data_dir`` and, with PostgreSQL, its database.

A backup is one tar file (gzip-compressed when its name ends in ``.gz``):

- ``data/...``: everything in ``data_dir``. SQLite databases (the store's catalog, the queue,
  the findings index) are copied with SQLite's online backup API (``sqlite3.Connection.backup``)
  into a consistent snapshot while the gateway keeps writing; a plain copy of a WAL database
  can catch a half-applied transaction. The index salt (``index-salt``) comes along: without it
  a rebuilt index keys patients differently and a federated count would see new patients.
  The databases are snapshotted first and the store's files copied after, so a file stored in
  between is one the catalog does not know (removed at the next start, as any crash leftover);
  temporary files (``store/tmp``) and SQLite's ``-wal``/``-shm`` files are left out.
- ``postgresql/<component>.dump``: ``pg_dump --format=custom`` of ``queue.url`` and
  ``index.url`` (once when both name one database), restored with ``pg_restore``.
- ``fedgate-backup.json``: the manifest (format version, fedgate version, when, and the size and
  SHA-256 of every member), written last; restore checks every member against it first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from gateway.index.columnar import COPY_FILE_NAME
from gateway.settings import GatewaySettings
from gateway.store.check import StoreInUse, exclusive

MANIFEST = "fedgate-backup.json"
FORMAT = "fedgate-backup"
#: Bumped when the archive's layout changes; restore refuses versions it does not know.
FORMAT_VERSION = 1
_SQLITE_HEADER = b"SQLite format 3\x00"
#: Files SQLite keeps beside a database in WAL mode: their content is in the snapshot.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_CHUNK = 1024 * 1024

Progress = Callable[[str], None]


class BackupError(Exception):
    """The backup or restore cannot go on; the message says why and what to do."""


@dataclass
class BackupReport:
    archive: Path
    files: int = 0
    databases: list[str] = field(default_factory=list)
    bytes: int = 0


def _version() -> str:
    try:
        return metadata.version("fedgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return False


def _skipped(relative: Path) -> bool:
    name = relative.name
    if relative.parts[:2] == ("store", "tmp"):
        return True  # never acknowledged (written to a temporary name, then renamed)
    if name.startswith(COPY_FILE_NAME):
        # The findings index's columnar copy (and its WAL): derived from the index, rebuilt
        # from it after a restore; a file copied while DuckDB writes it would be torn.
        return True
    return name.endswith(_SQLITE_SIDE_FILES) or name.endswith(".tmp")


def _files(data_dir: Path) -> list[Path]:
    """The files of data_dir a backup holds, in a stable order."""
    return sorted(
        path
        for path in data_dir.rglob("*")
        if (path.is_file() or path.is_symlink()) and not _skipped(path.relative_to(data_dir))
    )


def _postgres_urls(settings: GatewaySettings) -> dict[str, str]:
    """component -> URL; one dump when queue and index share a database."""
    urls: dict[str, str] = {}
    for component, url in (("queue", settings.queue.url), ("index", settings.index.url)):
        if url and url not in urls.values():
            urls[component] = url
    return urls


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install Debian's postgresql-client")
    return found


def backup(
    settings: GatewaySettings, out: Path, progress: Progress = lambda _: None
) -> BackupReport:
    """Write the backup of ``settings``'s gateway to ``out`` (``.tar`` or ``.tar.gz``)."""
    data_dir = settings.data_dir
    if not data_dir.is_dir():
        raise BackupError(f"data_dir {data_dir} does not exist: nothing to back up")
    if out.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(f"{out} is inside data_dir: write the backup elsewhere")
    report = BackupReport(out)
    members: dict[str, dict[str, Any]] = {}
    partial = out.with_name(out.name + ".partial")
    mode = "w:gz" if out.name.endswith(".gz") else "w"
    # gzip level 1: 200 synthetic CT instances (27.6 MB) gave 12.7 MB in 2.7 s, level 6
    # 12.5 MB in 15 s, tarfile's default 9 12.3 MB in 41 s (docs/operations.md).
    options = {"compresslevel": 1} if mode == "w:gz" else {}
    with tempfile.TemporaryDirectory(prefix="fedgate-backup-") as scratch_name:
        scratch = Path(scratch_name)
        with tarfile.open(partial, mode, **options) as archive:  # type: ignore[call-overload]
            databases = [p for p in _files(data_dir) if _is_sqlite(p)]
            # Databases first (a consistent snapshot each), then a fresh walk for the files, so
            # that every file the catalog's snapshot names is there (see the module doc).
            for path in databases:
                relative = path.relative_to(data_dir)
                progress(f"snapshot of {relative} (SQLite online backup)")
                snapshot = scratch / relative.as_posix().replace("/", "__")
                _sqlite_snapshot(path, snapshot)
                _add(archive, snapshot, f"data/{relative.as_posix()}", members)
                snapshot.unlink()
                report.databases.append(str(relative))
            others = [p for p in _files(data_dir) if p not in databases]
            for number, path in enumerate(others, 1):
                if number % 500 == 0 or number == len(others):
                    progress(f"files {number}/{len(others)}")
                if path.is_symlink():
                    continue  # data_dir holds none of ours; a link would point out of it
                try:
                    _add(archive, path, f"data/{path.relative_to(data_dir).as_posix()}", members)
                except FileNotFoundError:
                    continue  # removed since the walk (a replaced duplicate, retention)
                report.files += 1
            for component, url in _postgres_urls(settings).items():
                progress(f"pg_dump of the {component} database")
                dump = scratch / f"{component}.dump"
                _pg_dump(url, dump)
                _add(archive, dump, f"postgresql/{component}.dump", members)
                report.databases.append(f"postgresql:{component}")
            manifest = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "fedgate_version": _version(),
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "postgresql": sorted(_postgres_urls(settings)),
                "members": members,
            }
            encoded = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(encoded), int(time.time()), 0o600
            archive.addfile(info, io.BytesIO(encoded))
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, out)
    report.bytes = out.stat().st_size
    return report


def _sqlite_snapshot(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy while writers go on (it restarts a step
    when the source changes under it)."""
    live = sqlite3.connect(source, timeout=30)
    copy = sqlite3.connect(target)
    try:
        live.backup(copy, pages=1024, sleep=0.01)
    finally:
        copy.close()
        live.close()


def _pg_dump(url: str, target: Path) -> None:
    result = subprocess.run(
        [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), url],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {result.stderr.strip()[-500:]}")


def _add(archive: tarfile.TarFile, path: Path, name: str, members: dict[str, Any]) -> None:
    """Add ``path`` as ``name``, hashing exactly the bytes written (files may be read once)."""
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), stat.st_mode & 0o777
        hashing = _HashingReader(handle)
        archive.addfile(info, hashing)
    members[name] = {"size": info.size, "sha256": hashing.sha256.hexdigest()}


class _HashingReader:
    def __init__(self, handle: IO[bytes]):
        self.handle = handle
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.sha256.update(chunk)
        return chunk


# -- restore -----------------------------------------------------------------------------


@dataclass
class RestoreReport:
    files: int = 0
    databases: list[str] = field(default_factory=list)
    moved_aside: Path | None = None
    created_at: str = ""


def read_manifest(archive: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = archive.getmember(MANIFEST)
    except KeyError:
        raise BackupError(f"no {MANIFEST} in the archive: not a fedgate backup") from None
    extracted = archive.extractfile(member)
    if extracted is None:
        raise BackupError(f"{MANIFEST} is not a file")
    try:
        manifest: dict[str, Any] = json.loads(extracted.read())
    except ValueError as error:
        raise BackupError(f"{MANIFEST} is not JSON: {error}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError("not a fedgate backup (its manifest says another format)")
    if manifest.get("version") != FORMAT_VERSION:
        raise BackupError(
            f"backup format version {manifest.get('version')!r}: this fedgate reads version "
            f"{FORMAT_VERSION}; restore it with the fedgate that wrote it "
            f"({manifest.get('fedgate_version', 'unknown')})"
        )
    return manifest


def restore(
    settings: GatewaySettings,
    source: Path,
    force: bool = False,
    progress: Progress = lambda _: None,
) -> RestoreReport:
    """Restore ``source`` into ``settings``'s data_dir (and PostgreSQL databases).

    Refuses a data_dir that holds anything (or a PostgreSQL database with fedgate's tables)
    unless ``force``; then the old data_dir is moved aside, not deleted. Every member is
    checked against the manifest's SHA-256 before anything is put in place.
    """
    data_dir = settings.data_dir
    try:
        archive = tarfile.open(source, "r:*")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as error:
        raise BackupError(f"cannot read {source}: {error}") from None
    report = RestoreReport()
    with archive:
        manifest = read_manifest(archive)
        report.created_at = str(manifest.get("created_at", ""))
        expected: dict[str, dict[str, Any]] = manifest["members"]
        dumped = set(manifest.get("postgresql", []))
        wanted = _postgres_urls(settings)
        if dumped and not wanted:
            raise BackupError(
                "the backup holds PostgreSQL dumps but queue.url/index.url are not set: "
                "restore with the configuration the backup was made with"
            )
        if set(wanted) - dumped:
            raise BackupError(
                f"the configuration names PostgreSQL for {sorted(set(wanted) - dumped)} but the "
                "backup holds no dump of it (it was made with SQLite?)"
            )
        occupied = data_dir.exists() and any(data_dir.iterdir())
        if occupied and not force:
            raise BackupError(
                f"data_dir {data_dir} is not empty: restore into an empty one, or pass --force "
                "to move the present one aside"
            )
        if occupied:
            store = data_dir / "store"
            if store.is_dir():
                try:
                    with exclusive(store):
                        pass
                except StoreInUse as error:
                    raise BackupError(f"{error}: stop the gateway before restoring") from None
        for component, url in wanted.items():
            if _pg_has_fedgate(url) and not force:
                raise BackupError(
                    f"the {component} database already holds fedgate's tables: restore into "
                    "an empty database, or pass --force to replace them"
                )
        staging = Path(tempfile.mkdtemp(prefix=".fedgate-restore-", dir=data_dir.resolve().parent))
        try:
            progress("checking every member against the manifest")
            seen = _extract_checked(archive, expected, staging)
            missing = sorted(set(expected) - seen)
            if missing:
                raise BackupError(f"members missing from the archive: {missing[:5]}")
            if occupied:
                aside = data_dir.with_name(
                    f"{data_dir.name}.before-restore-{dt.datetime.now():%Y%m%dT%H%M%S}"
                )
                os.replace(data_dir, aside)
                report.moved_aside = aside
            elif data_dir.exists():
                data_dir.rmdir()
            restored = staging / "data"
            restored.mkdir(exist_ok=True)
            os.replace(restored, data_dir)
            report.files = sum(1 for name in expected if name.startswith("data/"))
            for component, url in wanted.items():
                progress(f"pg_restore of the {component} database")
                _pg_restore(url, staging / "postgresql" / f"{component}.dump")
                report.databases.append(f"postgresql:{component}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


def _extract_checked(
    archive: tarfile.TarFile, expected: dict[str, dict[str, Any]], staging: Path
) -> set[str]:
    seen: set[str] = set()
    for member in archive.getmembers():
        if member.name == MANIFEST:
            continue
        if member.name not in expected:
            raise BackupError(f"{member.name} is in the archive but not in its manifest")
        target = (staging / member.name).resolve()
        if not target.is_relative_to(staging.resolve()) or not member.isfile():
            raise BackupError(f"{member.name}: not a plain file inside the backup")
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        extracted = archive.extractfile(member)
        assert extracted is not None
        with open(target, "wb") as handle:
            while chunk := extracted.read(_CHUNK):
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(target, member.mode & 0o777 or 0o600)
        if digest.hexdigest() != expected[member.name]["sha256"]:
            raise BackupError(
                f"{member.name} does not match its SHA-256 in the manifest: the archive is "
                "damaged; nothing was restored"
            )
        seen.add(member.name)
    return seen


def _pg_has_fedgate(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as connection:
            row = connection.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_name = 'fedgate_schema'"
            ).fetchone()
    except psycopg.Error as error:
        raise BackupError(f"cannot connect to PostgreSQL: {error}") from None
    return bool(row and row[0])


def _pg_restore(url: str, dump: Path) -> None:
    result = subprocess.run(
        [
            _pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--dbname",
            url,
            str(dump),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BackupError(f"pg_restore failed: {result.stderr.strip()[-500:]}")
