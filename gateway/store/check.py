"""What a crash leaves in the embedded store, and reclaiming it (issue 13, item 7).

An instance is published (renamed into ``instances/``) before its catalog row is committed,
and acknowledged only after that commit (DESIGN.md, principle 1). A crash in between leaves
a complete file with no row; a crash while a part is received leaves a temporary file in
``tmp/``; a crash between the commit of a moved duplicate and the removal of its old copy
leaves that old copy without a row. None of them was ever acknowledged.

Such files are **removed**, not re-catalogued: the sender was never told "stored", so it
sends the instance again (an identical resend is a no-op), and re-cataloguing at start would
have to replay what a commit does beside the row (the findings index, the stability tracker,
the forward outbox) for an instance nobody is waiting for. The store then holds exactly what
was acknowledged. The gateway does this at every start; ``fedgate store check [--repair]``
reports (and removes) the same leftovers, and also names acknowledged instances whose file
is gone, which no repair can bring back (fetch them again from the sender or the PACS).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gateway.store.catalog import Catalog
from gateway.store.files import FileLayout

#: Held (flock) by the process that has the store open for writing; ``--repair`` needs it.
LOCK_FILE_NAME = "store.lock"


class StoreInUse(Exception):
    """Another process (a running gateway) has the store open."""


@dataclass
class StoreReport:
    """The store's files against its catalog."""

    #: Complete files under ``instances/`` with no catalog row: never acknowledged.
    orphans: list[Path] = field(default_factory=list)
    #: Files in ``tmp/``: parts that were being received.
    temporaries: list[Path] = field(default_factory=list)
    #: SOP Instance UIDs in the catalog whose file is missing: acknowledged and lost.
    missing: list[str] = field(default_factory=list)

    @property
    def leftovers(self) -> list[Path]:
        return self.orphans + self.temporaries

    @property
    def consistent(self) -> bool:
        return not (self.orphans or self.temporaries or self.missing)


def try_lock(root: Path) -> int | None:
    """Take the store's lock: its descriptor (close it to release), or None if it is held.

    An advisory ``flock``: the kernel releases it when its holder dies, even by kill -9.
    """
    root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold the store's lock, or raise StoreInUse if another process holds it."""
    descriptor = try_lock(root)
    if descriptor is None:
        raise StoreInUse(f"{root} is in use by another process (a running gateway?)")
    try:
        yield
    finally:
        os.close(descriptor)


def check(layout: FileLayout, catalog: Catalog, whole_studies: bool = True) -> StoreReport:
    """Compare the files with the catalog; changes nothing.

    One directory walk; for each study folder found, one indexed read of that study's
    catalogued paths, so memory holds one study at a time, whatever the store's size. A file
    of the folder without a row is an orphan, a row of the study without its file is missing.
    ``whole_studies`` also names the instances of catalogued studies that have no folder at
    all, which reads every study row (``fedgate store check``); the gateway's start-up leaves
    that out: at ten million instances it is a scan of the whole catalog, and a crash cannot
    remove a folder (docs/benchmarks.md).
    """
    report = StoreReport()
    if layout.tmp.is_dir():
        report.temporaries = sorted(p for p in layout.tmp.iterdir() if p.is_file())
    walked: set[str] = set()
    for study, files in _study_folders(layout.instances):
        catalogued = _catalogued_paths(catalog, study)
        present: set[str] = set()
        for path in files:
            relative = layout.relative(path)
            if relative in catalogued:
                present.add(relative)
            else:
                report.orphans.append(path)
        report.missing += [uid for path, uid in catalogued.items() if path not in present]
        if whole_studies:
            walked.add(study)
    if whole_studies:
        for (study,) in catalog.reader().execute("SELECT study_instance_uid FROM studies"):
            if study not in walked:
                report.missing += _catalogued_paths(catalog, study).values()
    report.orphans.sort()
    report.missing.sort()
    return report


def _catalogued_paths(catalog: Catalog, study_instance_uid: str) -> dict[str, str]:
    """path -> SOP Instance UID of the study's catalogued instances (index instances_by_study)."""
    return {
        path: uid
        for path, uid in catalog.reader().execute(
            "SELECT path, sop_instance_uid FROM instances WHERE study_instance_uid = ?",
            (study_instance_uid,),
        )
    }


def remove_leftovers(layout: FileLayout, report: StoreReport) -> int:
    """Remove the orphans and temporary files of ``report`` (and folders left empty).

    Only while no other process writes to the store (see :func:`exclusive`): a file being
    published by a running gateway looks exactly like an orphan until its commit.
    """
    removed = 0
    folders: set[Path] = set()
    for path in report.leftovers:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        while folder != layout.instances and folder.is_relative_to(layout.instances):
            try:
                folder.rmdir()
            except OSError:  # not empty
                break
            folder = folder.parent
    return removed


def _study_folders(folder: Path) -> Iterator[tuple[str, list[Path]]]:
    """Each folder ``instances/<study>/`` with its files ``<series>/<instance>``; anything else
    there is not ours."""
    if not folder.is_dir():
        return
    for study in os.scandir(folder):
        if not study.is_dir(follow_symlinks=False):
            continue
        files: list[Path] = []
        for series in os.scandir(study.path):
            if not series.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(series.path):
                if entry.is_file(follow_symlinks=False):
                    files.append(Path(entry.path))
        yield study.name, files
