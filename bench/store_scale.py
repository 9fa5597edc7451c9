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
import datetime as dt
import io
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset

from fedgate.phantom import PhantomSpec, generate_phantom
from gateway.store.catalog import Catalog
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer

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


def study_uid(number: int) -> str:
    # Numbers of a fixed width (no leading zero: PS3.5 9.1) keep the UIDs' text order their
    # numeric order, so each primary key is appended at the end of its B-tree.
    return f"{UID_ROOT}.1.{10_000_000 + number}"


def _mix(number: int) -> int:
    """A deterministic scramble of a study's number (patients, dates, series counts)."""
    return (number * 2_654_435_761) % 4_294_967_291


def study_date(number: int) -> str:
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
        indexes = _drop_indexes(connection)
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
        for statement in indexes:
            connection.execute(statement)
        connection.execute("ANALYZE")
    finally:
        connection.close()


def _drop_indexes(connection: sqlite3.Connection) -> list[str]:
    """Drop the schema's secondary indexes (built once at the end, far faster than kept up to
    date row by row); their SQL, to build them again."""
    indexes = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        connection.execute(f"DROP INDEX {name}")
    return [sql for _, sql in indexes]


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


def _counts(path: Path) -> dict[str, int]:
    connection = sqlite3.connect(path)
    try:
        return {
            table: connection.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
            for table in ("studies", "series", "instances")
        }
    finally:
        connection.close()


# -- instances sent for real ----------------------------------------------------------------


def _templates(size: int) -> list[Dataset]:
    """Eight CT slices of ``size`` x ``size`` (the phantom's), as datasets to re-label."""
    return [pydicom.dcmread(io.BytesIO(data)) for data in _small_instances(size)]


def _small_instances(size: int) -> list[bytes]:
    phantom = generate_phantom(
        PhantomSpec(
            seed=98,
            rows=size,
            columns=size,
            slices=8,
            pixel_spacing_mm=0.7,
            slice_thickness_mm=1.0,
            lesion_diameters_mm=(10.0,),
        )
    )
    result = []
    for dataset in phantom.instances():
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        result.append(buffer.getvalue())
    return result


def relabelled(
    templates: list[Dataset],
    study: str,
    series: str,
    count: int,
    attributes: dict[str, str] | None = None,
    first: int = 1,
) -> Iterator[bytes]:
    """``count`` Part 10 instances of one series, the templates' pixels with new UIDs."""
    for number in range(first, first + count):
        dataset = templates[number % len(templates)]
        sop = f"{series}.{1000 + number}"
        dataset.StudyInstanceUID = study
        dataset.SeriesInstanceUID = series
        dataset.SOPInstanceUID = sop
        dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(sop)
        dataset.InstanceNumber = number
        dataset.ImagePositionPatient = [0, 0, float(number)]
        for keyword, value in (attributes or {}).items():
            setattr(dataset, keyword, value)
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        yield buffer.getvalue()


#: The study read by WADO-RS metadata: one CT series (``--read-series`` instances, 500 by
#: default), sent for real.
READ_STUDY = f"{UID_ROOT}.2.1"
READ_SERIES = f"{READ_STUDY}.1"


def send(url: str, parts: Iterator[bytes], per_request: int = 250) -> int:
    """STOW-RS ``parts`` in requests of ``per_request``; the instances stored."""
    from bench.ingest import body, stow

    stored = 0
    batch: list[bytes] = []
    for part in parts:
        batch.append(part)
        if len(batch) == per_request:
            stow(url + "/studies", body(batch))
            stored += len(batch)
            batch = []
    if batch:
        stow(url + "/studies", body(batch))
        stored += len(batch)
    return stored


def ensure_read_study(
    client: httpx.Client, dicomweb: str, templates: list[Dataset], size: int
) -> None:
    """The series read by WADO-RS metadata (``size`` instances), sent unless the server holds
    it (Orthanc keeps it between runs; the gateway's is removed before each run)."""
    found = client.get(
        f"{dicomweb}/studies/{READ_STUDY}/series",
        headers={"Accept": "application/dicom+json"},
    )
    if found.status_code == 200 and found.content and found.json():
        counts = [item.get("00201209", {}).get("Value", [0])[0] for item in found.json()]
        if counts == [size]:
            return
    attributes = {"PatientID": "P-READ", "StudyDate": "20240601", "Modality": "CT"}
    send(dicomweb, relabelled(templates, READ_STUDY, READ_SERIES, size, attributes))


# -- timing -----------------------------------------------------------------------------------


@dataclass
class Timing:
    """One question asked ``repeats`` times (varying its key where it has one)."""

    name: str
    milliseconds: list[float] = field(default_factory=list)
    results: list[int] = field(default_factory=list)
    first_ms: float = 0.0

    def p(self, quantile: float) -> float:
        ordered = sorted(self.milliseconds)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


def questions(studies: int, repeats: int, read_size: int) -> list[tuple[str, list[str]]]:
    """(name, paths) of the timed questions over the generated studies; one path a repeat."""
    numbers = [(_mix(index + 101) % studies) for index in range(repeats)]
    weeks = [
        dt.date.fromordinal(FIRST_DAY + (_mix(index + 7) % (DAYS - 7))) for index in range(repeats)
    ]
    limit = "limit=101&offset=0"
    return [
        (
            "study search by PatientID",
            [f"/studies?PatientID={patient_id(n, studies)}&{limit}" for n in numbers],
        ),
        (
            "study search by date range (a week)",
            [
                f"/studies?StudyDate={w:%Y%m%d}-{w + dt.timedelta(days=6):%Y%m%d}&{limit}"
                for w in weeks
            ],
        ),
        ("study search by modality (MR)", [f"/studies?ModalitiesInStudy=MR&{limit}"] * repeats),
        (
            "study search by modality (US) and date range (a week)",
            [
                f"/studies?ModalitiesInStudy=US&StudyDate={w:%Y%m%d}-"
                f"{w + dt.timedelta(days=6):%Y%m%d}&{limit}"
                for w in weeks
            ],
        ),
        ("series search within a study", [f"/studies/{study_uid(n)}/series" for n in numbers]),
        (
            "instance search within a study",
            [f"/studies/{study_uid(n)}/instances" for n in numbers],
        ),
        (
            f"instance search within the {read_size}-instance study",
            [f"/studies/{READ_STUDY}/instances"] * repeats,
        ),
        (
            f"WADO-RS metadata of the {read_size}-instance series",
            [f"/studies/{READ_STUDY}/series/{READ_SERIES}/metadata"] * repeats,
        ),
    ]


def ask(client: httpx.Client, dicomweb: str, paths: list[str], name: str) -> Timing:
    timing = Timing(name)
    # The first answer apart: it pays for what is then kept (pages of SQLite's cache, a
    # series' metadata built from its files).
    started = time.perf_counter()
    client.get(dicomweb + paths[0], headers={"Accept": "application/dicom+json"})
    timing.first_ms = (time.perf_counter() - started) * 1000
    for path in paths:
        started = time.perf_counter()
        response = client.get(dicomweb + path, headers={"Accept": "application/dicom+json"})
        elapsed = time.perf_counter() - started
        if response.status_code not in (200, 204):
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
        timing.milliseconds.append(elapsed * 1000)
        timing.results.append(len(response.json()) if response.content else 0)
    return timing


def time_questions(dicomweb: str, studies: int, repeats: int, read_size: int) -> list[Timing]:
    with httpx.Client(timeout=600) as client:
        return [
            ask(client, dicomweb, paths, name)
            for name, paths in questions(studies, repeats, read_size)
        ]


def first_metadata_requests(
    dicomweb: str, catalog: Path, repeats: int, from_files: int = 3
) -> tuple[Timing, Timing]:
    """The read series' metadata as its first request meets it (not stable, never asked):
    each time the series' kept row is removed first (the request builds and keeps it). Then
    ``from_files`` times with the instances' kept metadata removed too, as for instances
    stored without it (a catalog from before it was kept): the files are read. The read study
    is sent again at the next run, which restores them."""
    url = f"{dicomweb}/studies/{READ_STUDY}/series/{READ_SERIES}/metadata"
    kept, files = Timing("first request, kept at ingest"), Timing("first request, from files")
    connection = sqlite3.connect(catalog, timeout=60)
    try:
        with httpx.Client(timeout=600) as client:
            for timing, count in ((kept, repeats), (files, from_files)):
                if timing is files:
                    connection.execute(
                        "DELETE FROM instance_metadata WHERE sop_instance_uid IN (SELECT "
                        "sop_instance_uid FROM instances WHERE series_instance_uid = ?)",
                        (READ_SERIES,),
                    )
                    connection.commit()
                for _ in range(count):
                    connection.execute(
                        "DELETE FROM series_metadata WHERE series_instance_uid = ?", (READ_SERIES,)
                    )
                    connection.commit()
                    started = time.perf_counter()
                    response = client.get(url, headers={"Accept": "application/dicom+json"})
                    timing.milliseconds.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"{url}: {response.status_code}")
                    timing.results.append(len(response.json()))
    finally:
        connection.close()
    return kept, files


def stow_rounds(
    big: str, empty: str, rounds: int, templates: list[Dataset], count: int
) -> tuple[list[float], list[float]]:
    """STOW-RS of ``count`` new instances into the big store and into an empty one (the same
    server's software on a fresh data folder, started once and warmed up like the big one),
    alternating; seconds per request each. The empty store holds at most the earlier rounds'
    few hundred instances."""
    from bench.ingest import body, settle, stow

    into_big: list[float] = []
    into_empty: list[float] = []
    warm = body(list(relabelled(templates, f"{UID_ROOT}.3.9", f"{UID_ROOT}.3.9.1", 4)))
    for url in (big, empty):
        stow(url + "/studies", warm)
    for round_index in range(rounds):
        payloads = [
            body(
                list(
                    relabelled(
                        templates,
                        f"{UID_ROOT}.3.{round_index + 1}{which}",
                        f"{UID_ROOT}.3.{round_index + 1}{which}.1",
                        count,
                        {"PatientID": f"P-STOW-{round_index}{which}"},
                    )
                )
            )
            for which in (1, 2)
        ]
        settle()
        into_empty.append(stow(empty + "/studies", payloads[0]))
        settle()
        into_big.append(stow(big + "/studies", payloads[1]))
        print(
            f"  STOW round {round_index + 1}: big {into_big[-1]:.3f} s, "
            f"empty {into_empty[-1]:.3f} s",
            flush=True,
        )
    return into_big, into_empty


def stowed_studies(rounds: int) -> list[str]:
    """The studies :func:`stow_rounds` added to the big store (removed after the run)."""
    return [f"{UID_ROOT}.3.9"] + [f"{UID_ROOT}.3.{r + 1}2" for r in range(rounds)]


def crawl(
    client: httpx.Client, dicomweb: str, page: int, studies: int, pages: int | None = None
) -> tuple[int, float, float]:
    """Every study by QIDO-RS pages of ``page`` (limit/offset); with ``pages``, the first
    ``pages`` pages only. Returns the studies seen, the seconds, and the milliseconds of the
    store's last page (OFFSET near ``studies``: SQLite steps over every study before it)."""
    seen = 0
    started = time.perf_counter()
    while pages is None or seen < pages * page:
        got = _page(client, dicomweb, page, seen)
        seen += got
        if got < page:
            break
        if seen % (page * 50) == 0:
            print(f"\r  crawled {seen:,} studies", end="", flush=True)
    seconds = time.perf_counter() - started
    deepest = time.perf_counter()
    if _page(client, dicomweb, page, max(0, studies - page)) == 0:
        raise RuntimeError("the last page of the crawl is empty")
    return seen, seconds, (time.perf_counter() - deepest) * 1000


def _page(client: httpx.Client, dicomweb: str, page: int, offset: int) -> int:
    response = client.get(
        f"{dicomweb}/studies",
        params={"limit": page, "offset": offset},
        headers={"Accept": "application/dicom+json"},
    )
    response.raise_for_status()
    return len(response.json()) if response.content else 0


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the peer -----------------------------------------------------------------------------------


def orthanc_cache(cache: Path, instances: int) -> Path:
    return cache / f"orthanc-scale-v{GENERATOR_VERSION}-{instances}"


def fill_orthanc(url: str, instances: int, templates: list[Dataset]) -> None:
    """Orthanc gets ``instances // 10`` of the generated studies, sent for real (64x64 pixels:
    its index's cost does not depend on the pixels)."""
    studies = instances // 10
    started = time.perf_counter()

    def parts() -> Iterator[bytes]:
        study_values, series_values, instance_values = study_rows(0, studies, studies, 0.0)
        study_by_uid = {row[0]: row for row in study_values}
        sizes = Counter(row[1] for row in instance_values)
        for series, study, modality, number, *_ in series_values:
            row = study_by_uid[study]
            yield from relabelled(
                templates,
                str(study),
                str(series),
                sizes[series],
                {
                    "PatientID": str(row[1]),
                    "PatientName": str(row[2]),
                    "PatientSex": str(row[4]),
                    "StudyDate": str(row[5]),
                    "AccessionNumber": str(row[7]),
                    "Modality": str(modality),
                    "SeriesNumber": str(number),
                },
            )

    sent = send(url, parts(), per_request=500)
    print(f"  Orthanc: {sent:,} instances in {time.perf_counter() - started:.0f} s", flush=True)


def catalog_commits(
    big: Path, empty: Path, rounds: int, count: int, templates: list[Dataset]
) -> tuple[list[float], list[float]]:
    """The catalog's share of a STOW-RS, alone: one transaction of ``count`` instances' rows
    (what a request's commit groups write, fsync included) into the big catalog and into an
    empty one, alternating; milliseconds each. The rows are deleted again afterwards."""
    from gateway.store.catalog import InstanceRecord

    catalogs = {"big": Catalog.open(big), "empty": Catalog.open(empty)}
    times: dict[str, list[float]] = {"big": [], "empty": []}
    studies: list[str] = []
    try:
        for round_index in range(rounds):
            for name, catalog in catalogs.items():
                study = f"{UID_ROOT}.4.{round_index + 1}{1 if name == 'big' else 2}"
                series = f"{study}.1"
                studies.append(study)
                header = templates[0].copy()
                header.StudyInstanceUID, header.SeriesInstanceUID = study, series
                rows = [
                    (
                        header,
                        InstanceRecord(
                            study_instance_uid=study,
                            series_instance_uid=series,
                            sop_instance_uid=f"{series}.{1000 + number}",
                            sop_class_uid=CT_IMAGE_STORAGE,
                            transfer_syntax_uid=EXPLICIT_VR_LITTLE_ENDIAN,
                            path=f"instances/{study}/{series}/{series}.{1000 + number}.dcm",
                            size=525_000,
                            instance_number=number,
                        ),
                    )
                    for number in range(1, count + 1)
                ]
                started = time.perf_counter()
                with catalog.transaction() as writer:
                    writer.add_instances(rows)
                times[name].append((time.perf_counter() - started) * 1000)
    finally:
        for catalog in catalogs.values():
            with catalog.transaction() as writer:
                for study in studies:
                    writer.delete_study(study)
            catalog.close()
    return times["big"], times["empty"]


def _table(title: str, timings: list[Timing]) -> str:
    lines = [f"| {title} | p50 ms | p95 ms | results | first ms |", "|---|---|---|---|---|"]
    for timing in timings:
        lines.append(
            f"| {timing.name} | {timing.p(0.5):.1f} | {timing.p(0.95):.1f} "
            f"| {statistics.median(timing.results):.0f} | {timing.first_ms:.1f} |"
        )
    return "\n".join(lines)


def _remove_studies(data: Path, studies: list[str]) -> None:
    """Take the benchmark's STOW-RS studies out of the cached store again (gateway stopped)."""
    catalog = Catalog.open(data / "store" / "catalog.sqlite")
    try:
        with catalog.transaction() as writer:
            for study in studies:
                writer.delete_study(study)
    finally:
        catalog.close()
    for study in studies:
        shutil.rmtree(data / "store" / "instances" / study, ignore_errors=True)


def run_gateway(args: argparse.Namespace, work: Path, templates: list[Dataset]) -> None:
    data = cached_catalog(args.cache, args.studies)
    counts = _counts(data / "store" / "catalog.sqlite")
    print(f"catalog: {counts['studies']:,} studies, {counts['instances']:,} instances")
    if args.commit_rounds:
        big, small = catalog_commits(
            data / "store" / "catalog.sqlite",
            work / "empty-catalog" / "catalog.sqlite",
            args.commit_rounds,
            args.stow_instances,
            templates,
        )
        print(
            f"catalog commit of {args.stow_instances} instances' rows, median of "
            f"{args.commit_rounds}: big {statistics.median(big):.1f} ms, empty "
            f"{statistics.median(small):.1f} ms (each: big {', '.join(f'{t:.0f}' for t in big)};"
            f" empty {', '.join(f'{t:.0f}' for t in small)})",
            flush=True,
        )
    # The read study is sent again at every run, so that what the gateway prepares at ingest
    # (each instance's metadata) is there, as it is for a study a PACS has just forwarded.
    _remove_studies(data, [READ_STUDY])
    started = time.perf_counter()
    gateway = GatewayProcess(work / "gateway", settings={"data_dir": str(data)}).start(timeout=1800)
    print(f"gateway started in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        assert gateway.process is not None
        with httpx.Client(timeout=600) as client:
            ensure_read_study(client, gateway.dicomweb_url, templates, args.read_series)
        before_stable = first_metadata_requests(
            gateway.dicomweb_url, data / "store" / "catalog.sqlite", args.repeats
        )
        timings = time_questions(gateway.dicomweb_url, args.studies, args.repeats, args.read_series)
        print()
        print(_table(f"gateway, {counts['instances']:,} instances", timings))
        kept, from_files = before_stable
        print(
            f"\nWADO-RS metadata of the {args.read_series}-instance series, first request (the "
            f"series neither stable nor asked before), median of {len(kept.milliseconds)}: "
            f"{kept.p(0.5):.1f} ms (p95 {kept.p(0.95):.1f}) from the instances' metadata kept "
            f"at ingest; {from_files.p(0.5):.1f} ms (median of {len(from_files.milliseconds)}) "
            f"built from the files, as for instances stored without it (target 200 ms)"
        )
        print(f"gateway RSS peak (VmHWM) so far: {vm_hwm_mb(gateway.process.pid):.0f} MB")
        if args.stow_rounds:
            empty = GatewayProcess(work / "empty").start()
            try:
                big, small = stow_rounds(
                    gateway.dicomweb_url,
                    empty.dicomweb_url,
                    args.stow_rounds,
                    templates,
                    args.stow_instances,
                )
            finally:
                empty.stop()
            ratio = statistics.median(small) / statistics.median(big)
            n = args.stow_instances
            print(
                f"\nSTOW-RS of {n} instances, median of {args.stow_rounds}: "
                f"into the big store {n / statistics.median(big):.0f} instances/s, into an "
                f"empty one {n / statistics.median(small):.0f} instances/s: "
                f"big / empty rate {ratio:.2f} (target >= 0.90)"
            )
        if args.crawl:
            before = vm_hwm_mb(gateway.process.pid)
            with httpx.Client(timeout=600) as client:
                seen, seconds, last_ms = crawl(
                    client, gateway.dicomweb_url, args.page, counts["studies"], args.crawl_pages
                )
            print(
                f"\nQIDO-RS crawl: {seen:,} studies in pages of {args.page} in {seconds:.0f} s "
                f"(the last page, offset {counts['studies'] - args.page:,}: {last_ms:.0f} ms); "
                f"gateway VmHWM {before:.0f} MB before, {vm_hwm_mb(gateway.process.pid):.0f} MB "
                f"after (target < 250 MB)"
            )
    finally:
        gateway.stop()
        if args.stow_rounds:
            _remove_studies(data, stowed_studies(args.stow_rounds))


def run_orthanc(args: argparse.Namespace, work: Path, templates: list[Dataset]) -> None:
    folder = orthanc_cache(args.cache, args.orthanc_instances)
    ready = folder / "filled"
    orthanc = OrthancServer(folder).start()
    try:
        if not ready.exists():
            print(f"filling Orthanc with {args.orthanc_instances:,} instances ...", flush=True)
            fill_orthanc(orthanc.dicomweb_url, args.orthanc_instances, _templates(64))
            ready.write_text("done\n")
        with httpx.Client(timeout=600) as client:
            ensure_read_study(client, orthanc.dicomweb_url, templates, args.read_series)
        timings = time_questions(
            orthanc.dicomweb_url, args.orthanc_instances // 10, args.repeats, args.read_series
        )
        print()
        print(_table(f"Orthanc 1.10 (SQLite index), {args.orthanc_instances:,} instances", timings))
        if args.stow_rounds:
            empty_orthanc = OrthancServer(work / "orthanc-empty").start()
            try:
                big, small = stow_rounds(
                    orthanc.dicomweb_url,
                    empty_orthanc.dicomweb_url,
                    args.stow_rounds,
                    templates,
                    args.stow_instances,
                )
            finally:
                empty_orthanc.stop()
            n = args.stow_instances
            print(
                f"\nOrthanc STOW-RS of {n} instances: into {args.orthanc_instances:,} "
                f"{n / statistics.median(big):.0f} instances/s, into an empty one "
                f"{n / statistics.median(small):.0f} instances/s: big / empty rate "
                f"{statistics.median(small) / statistics.median(big):.2f}"
            )
            for study in stowed_studies(args.stow_rounds):
                found = httpx.post(f"{orthanc.url}/tools/lookup", content=study, timeout=30)
                for item in found.json():
                    httpx.delete(f"{orthanc.url}/studies/{item['ID']}", timeout=60)
    finally:
        orthanc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path("/work/cache"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--stow-rounds", type=int, default=3)
    parser.add_argument("--orthanc-instances", type=int, default=50_000, help="0: no peer")
    parser.add_argument("--crawl", action="store_true")
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--crawl-pages", type=int, help="crawl only the first pages (and the last)")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--read-series", type=int, default=500, help="instances of the read series")
    parser.add_argument("--stow-instances", type=int, default=200)
    parser.add_argument(
        "--commit-rounds", type=int, default=10, help="the catalog's commits alone (0: none)"
    )
    args = parser.parse_args()
    if args.generate_only:
        data = cached_catalog(args.cache, args.studies)
        print(_counts(data / "store" / "catalog.sqlite"))
        return
    print(f"load average at the start: {Path('/proc/loadavg').read_text().strip()}")
    templates = _templates(512)
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-scale-") as work:
        run_gateway(args, Path(work), templates)
        if args.orthanc_instances:
            run_orthanc(args, Path(work), templates)
    print(f"\nload average at the end: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
