"""Part 10 files on disk: where an instance lives and how it gets there atomically.

An instance becomes visible only by ``rename`` of a complete, fsynced temporary file, so a
crash at any moment leaves either the old file, the new file, or a stray temporary file in
``tmp/`` (removed at start-up), never a half-written instance (DESIGN.md, principle 1).
Paths are built only from UIDs that passed :func:`gateway.store.uids.is_valid_uid` (digits and
dots, no empty component), so no request can steer a path outside the store.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO

from gateway.store.uids import require_valid_uid


class FileLayout:
    """``<root>/instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``."""

    def __init__(self, root: Path):
        self.root = root
        self.instances = root / "instances"
        self.tmp = root / "tmp"

    def prepare(self) -> None:
        """Create the folders and remove temporary files a crash left behind."""
        self.instances.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def instance_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        for uid in (study_uid, series_uid, sop_instance_uid):
            require_valid_uid(uid)
        return self.instances / study_uid / series_uid / f"{sop_instance_uid}.dcm"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def absolute(self, relative_path: str) -> Path:
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"path {relative_path!r} escapes the store")
        return path

    def new_temporary(self) -> tuple[Path, BinaryIO]:
        path = self.tmp / f"{uuid.uuid4().hex}.part"
        # Opened for reading too, so the checker can fsync through the same descriptor.
        return path, open(path, "w+b")


def fsync_file(handle: BinaryIO) -> None:
    handle.flush()
    os.fdatasync(handle.fileno())


def fsync_directory(path: Path) -> None:
    """Make a rename into ``path`` durable (POSIX: the directory entry is data of the folder)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temporary: Path, final: Path) -> None:
    """Atomically move a complete, fsynced temporary file to its final place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary, final)
