"""The embedded store at ten million instances (issue 19, items 1 and 5).

    PYTHONPATH=$PWD .venv/bin/python -m bench.store_scale [--studies 1000000]
        [--cache /work/cache] [--orthanc-instances 50000] [--repeats 20]

The catalog's rows are generated straight into SQLite (bulk ``executemany`` in large
transactions, the secondary indexes built afterwards), ten instances per study on average
(one to three series, the third an SR), and kept under ``--cache`` in a folder named by the
generator's version and size, so that a rerun skips the generation. Files exist only for the
studies that are read: a CT study of one 500-instance series and 10 small studies, sent by
STOW-RS through the gateway at every run (so whatever the gateway prepares at ingest is there).

Then a gateway (its defaults, on that data folder) is timed as a user's client meets it:
QIDO-RS study searches by PatientID, by a date range and by modality (``limit=101``, as OHIF's
study list asks), series and instance searches within a study, WADO-RS metadata of the
500-instance series, and STOW-RS of 200 instances into the big store against a fresh, empty
one (alternating). The peer is Orthanc 1.10 (Debian, defaults) holding ``--orthanc-instances``
instances ingested for real, where its SQLite index is said to degrade: the same questions.
With ``--crawl`` the gateway's peak RSS (VmHWM) is read after a QIDO-RS crawl of every study
(pages of ``--page`` with limit/offset).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.store.catalog import Catalog

#: Bump when the generated rows change: the cache folder is named by it.
GENERATOR_VERSION = 1
#: The UID root of generated rows (a private root: nothing real shares it).
UID_ROOT = "1.2.826.0.1.3680043.10.1019"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: A study's modality by the study's number modulo 10: 60 % CT, 20 % MR, 10 % CR, 10 % US.
MODALITIES = ("CT", "CT", "MR", "CT", "CR", "CT", "US", "CT", "MR", "CT")
SOP_CLASS = {
    "CT": CT_IMAGE_STORAGE,
    "MR": MR_IMAGE_STORAGE,
    "CR": CR_IMAGE_STORAGE,
    "US": US_IMAGE_STORAGE,
    "SR": COMPREHENSIVE_3D_SR,
}
#: A study's series sizes by its number of series (ten instances a study on average).
SERIES_SIZES = {1: (10,), 2: (7, 3), 3: (8, 1, 1)}
#: Patients: about 2.5 studies each.
PATIENT_RATIO = 0.4
FIRST_DAY = 735599  # 2015-01-01 as a proleptic Gregorian ordinal
DAYS = 3653  # to 2024-12-31
#: Rows per transaction while generating.
BATCH_STUDIES = 20_000
#: The indexes of the catalog's schema, dropped while generating and built at the end.
SECONDARY_INDEXES = (
    "series_by_study",
    "instances_by_series",
    "instances_by_study",
    "studies_by_patient",
    "studies_by_date",
)


def study_uid(number: int) -> str:
    # Numbers of a fixed width (no leading zero: PS3.5 9.1) keep the UIDs' text order their
    # numeric order, so each primary key is appended at the end of its B-tree.
    return f"{UID_ROOT}.1.{10_000_000 + number}"


def _mix(number: int) -> int:
    """A deterministic scramble of a study's number (patients, dates, series counts)."""
    return (number * 2_654_435_761) % 4_294_967_291


def study_date(number: int) -> str:
    import datetime as dt

    return dt.date.fromordinal(FIRST_DAY + _mix(number) % DAYS).strftime("%Y%m%d")


def patient_id(number: int, studies: int) -> str:
    patients = max(1, int(studies * PATIENT_RATIO))
    return f"P{_mix(number + 17) % patients:08d}"


def study_rows(
    first: int, last: int, studies: int, now: float
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The studies, series and instances rows of the studies ``first`` to ``last - 1``."""
    study_values: list[tuple[object, ...]] = []
    series_values: list[tuple[object, ...]] = []
    instance_values: list[tuple[object, ...]] = []
    for number in range(first, last):
        uid = study_uid(number)
        date = study_date(number)
        modality = MODALITIES[number % 10]
        study_values.append(
            (
                uid,
                patient_id(number, studies),
                f"SYNTHETIC^PATIENT{_mix(number + 17) % 1000}",
                "19600101",
                "FM"[number % 2],
                date,
                "101500",
                f"A{10_000_000 + number}",
                str(number % 100_000),
                f"{modality} generated study",
                None,
                now,
                None,
            )
        )
        sizes = SERIES_SIZES[1 + _mix(number + 3) % 3]
        for index, size in enumerate(sizes, start=1):
            series = f"{uid}.{index}"
            series_modality = "SR" if index == 3 else modality
            series_values.append(
                (series, uid, series_modality, index, None, None, date, "101500", now)
            )
            sop_class = SOP_CLASS[series_modality]
            folder = f"instances/{uid}/{series}"
            for instance in range(1, size + 1):
                sop = f"{series}.{1000 + instance}"
                instance_values.append(
                    (
                        sop,
                        series,
                        uid,
                        sop_class,
                        instance,
                        None if series_modality == "SR" else 512,
                        None if series_modality == "SR" else 512,
                        None if series_modality == "SR" else 16,
                        None,
                        EXPLICIT_VR_LITTLE_ENDIAN,
                        f"{folder}/{sop}.dcm",
                        525_000,
                        now,
                    )
                )
    return study_values, series_values, instance_values


def generate_catalog(path: Path, studies: int, progress: bool = True) -> None:
    """Write ``studies`` generated studies into a new catalog at ``path`` (its real schema)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Catalog.open(path).close()  # the schema, by the catalog's own migrations
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # Generation only: a crash here leaves a half-built cache, which has no ready mark and
        # is generated again. The gateway opens it with its own (durable) settings.
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")  # 256 MiB
        connection.execute(f"PRAGMA temp_store_directory='{path.parent}'")
        for index in SECONDARY_INDEXES:
            connection.execute(f"DROP INDEX IF EXISTS {index}")
        now = time.time()
        started = time.perf_counter()
        for first in range(0, studies, BATCH_STUDIES):
            last = min(studies, first + BATCH_STUDIES)
            study_values, series_values, instance_values = study_rows(first, last, studies, now)
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO studies (study_instance_uid, patient_id, patient_name, "
                "patient_birth_date, patient_sex, study_date, study_time, accession_number, "
                "study_id, study_description, referring_physician_name, updated_at, "
                "issuer_of_patient_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                study_values,
            )
            connection.executemany("INSERT INTO series VALUES (?,?,?,?,?,?,?,?,?)", series_values)
            connection.executemany(
                "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", instance_values
            )
            connection.execute("COMMIT")
            if progress:
                elapsed = time.perf_counter() - started
                print(
                    f"\r  {last:,}/{studies:,} studies, {elapsed:.0f} s",
                    end="",
                    flush=True,
                )
        if progress:
            print("\n  building the indexes ...", flush=True)
        _rebuild_indexes(connection)
        connection.execute("ANALYZE")
    finally:
        connection.close()


def _rebuild_indexes(connection: sqlite3.Connection) -> None:
    """Create every index of the schema that generation dropped, as its migrations wrote it."""
    from gateway.store.catalog import MIGRATIONS

    for migration in MIGRATIONS:
        for statement in migration.statements:
            if statement.startswith("CREATE INDEX") and any(
                f" {index} " in statement for index in SECONDARY_INDEXES
            ):
                connection.execute(statement)


def cached_catalog(cache: Path, studies: int) -> Path:
    """The data folder holding a generated catalog of ``studies`` studies; made if missing."""
    folder = cache / f"store-scale-v{GENERATOR_VERSION}-{studies}"
    ready = folder / "generated"
    catalog = folder / "data" / "store" / "catalog.sqlite"
    if not ready.exists():
        print(f"generating {studies:,} studies into {folder} ...", flush=True)
        started = time.perf_counter()
        for leftover in (catalog, catalog.with_name("catalog.sqlite-wal")):
            leftover.unlink(missing_ok=True)
        generate_catalog(catalog, studies)
        ready.write_text(f"{time.perf_counter() - started:.0f} s\n")
    return folder / "data"


def _counts(path: Path) -> Iterator[tuple[str, int]]:
    connection = sqlite3.connect(path)
    try:
        for table in ("studies", "series", "instances"):
            yield table, connection.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path("/work/cache"))
    args = parser.parse_args()
    data = cached_catalog(args.cache, args.studies)
    print(dict(_counts(data / "store" / "catalog.sqlite")))


if __name__ == "__main__":
    main()
