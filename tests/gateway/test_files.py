"""Temporary files for received parts: made ahead, each one new, none left behind."""

from __future__ import annotations

from pathlib import Path

from gateway.store.files import FileLayout


def test_temporary_files_are_new_and_those_made_ahead_are_removed(tmp_path: Path) -> None:
    layout = FileLayout(tmp_path)
    layout.prepare()
    taken = [layout.new_temporary() for _ in range(40)]  # more than are kept ready
    paths = {path for path, _ in taken}
    assert len(paths) == 40 and all(path.parent == layout.tmp for path in paths)
    for number, (path, handle) in enumerate(taken):
        handle.write(b"part %d" % number)
        handle.close()
        assert path.read_bytes() == b"part %d" % number
    layout.close()
    assert set(layout.tmp.iterdir()) == paths  # only the files handed out remain
    for path in paths:
        path.unlink()
    layout.prepare()  # a closed layout can start again
    path, handle = layout.new_temporary()
    handle.close()
    layout.close()
    assert list(layout.tmp.iterdir()) == [path]
