"""Benchmark: the start-up check of the embedded store against its catalog (issue 13, item 7).

    PYTHONPATH=. .venv/bin/python -m bench.store_check [--instances 100000]

Fills a temporary store with N one-byte instance files (1,000 per study, five series each)
and their catalog rows, then times :func:`gateway.store.check.check`, which the gateway runs
at every start (page cache warm: the files were just written).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from gateway.store.catalog import Catalog
from gateway.store.check import check
from gateway.store.files import FileLayout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    count = parser.parse_args().instances
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        layout = FileLayout(root)
        layout.prepare()
        Catalog.open(root / "catalog.sqlite").close()
        rows = []
        for number in range(count):
            study = f"1.2.{number // 1000}"
            series = f"{study}.{(number // 200) % 5}"
            path = layout.instance_path(study, series, f"1.2.3.{number}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            rows.append((f"1.2.3.{number}", series, study, layout.relative(path)))
        with sqlite3.connect(root / "catalog.sqlite") as connection:
            connection.executemany(
                "INSERT OR IGNORE INTO studies (study_instance_uid, updated_at) VALUES (?, 0)",
                {(row[2],) for row in rows},
            )
            connection.executemany(
                "INSERT OR IGNORE INTO series (series_instance_uid, study_instance_uid, "
                "updated_at) VALUES (?, ?, 0)",
                {(row[1], row[2]) for row in rows},
            )
            connection.executemany(
                "INSERT INTO instances (sop_instance_uid, series_instance_uid, "
                "study_instance_uid, sop_class_uid, transfer_syntax_uid, path, size, "
                "stored_at) VALUES (?, ?, ?, '1.2', '1.2', ?, 1, 0)",
                rows,
            )
        catalog = Catalog.open(root / "catalog.sqlite")
        started = time.perf_counter()
        report = check(layout, catalog)
        elapsed = time.perf_counter() - started
        catalog.close()
        assert report.consistent, "the synthetic store should match its catalog"
        print(f"{count} instances: store check {elapsed:.2f} s")


if __name__ == "__main__":
    main()
