"""Part 10 files on disk: where an instance lives and how it gets there atomically.

An instance becomes visible only by ``rename`` of a complete, fsynced temporary file, so a
crash at any moment leaves either the old file, the new file, or a stray temporary file in
``tmp/`` (removed at start-up, with any published file whose catalog row was never
committed: :mod:`gateway.store.check`), never a half-written instance (DESIGN.md, principle 1).
Paths are built only from UIDs that passed :func:`gateway.store.uids.is_valid_uid` (digits and
dots, no empty component), so no request can steer a path outside the store.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from gateway.store.uids import require_valid_uid


class FileLayout:
    """``<root>/instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``."""

    def __init__(self, root: Path):
        self.root = root
        self.instances = root / "instances"
        self.tmp = root / "tmp"
        self._ready: queue.SimpleQueue[tuple[Path, BinaryIO]] = queue.SimpleQueue()
        self._maker: ThreadPoolExecutor | None = None
        self._maker_lock = threading.Lock()

    def prepare(self) -> None:
        """Create the folders (what a crash left in them: :mod:`gateway.store.check`)."""
        self.instances.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

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
        """A new, empty temporary file, open for writing (and reading).

        Taken from a few made ahead by a thread of its own: creating a file must wait for the
        filesystem's journal, which the intake's own fsyncs keep busy, and the event loop
        receiving a request should not wait with it (about 0.5 ms per file on ext4 here).
        """
        with self._maker_lock:  # the DIMSE intake calls from its own threads
            if self._maker is None:
                self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-tmp")
                for _ in range(_READY_FILES):
                    self._maker.submit(self._make_ready)
            self._maker.submit(self._make_ready)
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return self._create()

    def _make_ready(self) -> None:
        self._ready.put(self._create())

    def _create(self) -> tuple[Path, BinaryIO]:
        path = self.tmp / f"{uuid.uuid4().hex}.part"
        # Opened for reading too, so the checker can fsync through the same descriptor.
        return path, open(path, "w+b")

    def close(self) -> None:
        """Stop making temporary files and remove those made ahead."""
        with self._maker_lock:
            if self._maker is not None:
                self._maker.shutdown(wait=True)
                self._maker = None
        while True:
            try:
                path, handle = self._ready.get_nowait()
            except queue.Empty:
                break
            handle.close()
            path.unlink(missing_ok=True)


#: Temporary files kept ready (open descriptors) per store.
_READY_FILES = 16


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
    """Atomically move a complete, fsynced temporary file to its final place.

    The rename is tried first and the folder made only if it is missing: every slice of a
    series after the first then costs one system call, not a mkdir as well.
    """
    try:
        os.replace(temporary, final)
    except FileNotFoundError:
        if not temporary.exists():
            raise
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, final)
