"""The embedded store's catalog: one SQLite database (WAL) of studies, series and instances.

The catalog holds the attributes QIDO-RS matches on and returns by default (PS3.18 10.6.3,
Table 10.6.3-3/4/5), and the path of each instance's file. Anything else is read from the
file itself when asked for. Writes go through one connection under a lock, in one
transaction per STOW request; readers use their own connections (WAL lets them run beside
the writer).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from gateway.migrations import Migration, migrate
from gateway.store.patients import PatientIdentity

#: The catalog's migrations (applied by :mod:`gateway.migrations`); never edit one that has
#: shipped, add the next.
MIGRATIONS = (
    Migration(
        1,
        "catalog",
        (
            """CREATE TABLE IF NOT EXISTS studies (
            study_instance_uid TEXT PRIMARY KEY,
            patient_id TEXT, patient_name TEXT, patient_birth_date TEXT, patient_sex TEXT,
            study_date TEXT, study_time TEXT, accession_number TEXT, study_id TEXT,
            study_description TEXT, referring_physician_name TEXT,
            updated_at REAL NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS series (
            series_instance_uid TEXT PRIMARY KEY,
            study_instance_uid TEXT NOT NULL REFERENCES studies ON DELETE CASCADE,
            modality TEXT, series_number INTEGER, series_description TEXT,
            body_part_examined TEXT, performed_procedure_step_start_date TEXT,
            performed_procedure_step_start_time TEXT,
            updated_at REAL NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS series_by_study ON series (study_instance_uid)",
            """CREATE TABLE IF NOT EXISTS instances (
            sop_instance_uid TEXT PRIMARY KEY,
            series_instance_uid TEXT NOT NULL REFERENCES series ON DELETE CASCADE,
            study_instance_uid TEXT NOT NULL,
            sop_class_uid TEXT NOT NULL, instance_number INTEGER,
            rows INTEGER, columns INTEGER, bits_allocated INTEGER, number_of_frames INTEGER,
            transfer_syntax_uid TEXT NOT NULL,
            path TEXT NOT NULL, size INTEGER NOT NULL, stored_at REAL NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS instances_by_series ON instances (series_instance_uid)",
            "CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_instance_uid)",
            "CREATE INDEX IF NOT EXISTS studies_by_patient ON studies (patient_id)",
            "CREATE INDEX IF NOT EXISTS studies_by_date ON studies (study_date)",
            # Instances still to be forwarded to the upstream PACS (ingest.forward_to_pacs).
            # Written in the same transaction as the instance, so an acknowledged instance is
            # never left behind. state: pending, or failed (gave up: see last_error).
            """CREATE TABLE IF NOT EXISTS forward_outbox (
            sop_instance_uid TEXT PRIMARY KEY,
            study_instance_uid TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS forward_outbox_due "
            "ON forward_outbox (state, next_attempt_at)",
        ),
    ),
    Migration(
        2,
        "issuer of patient id",
        # The study's patient is PatientID qualified by its issuer (PS3.3 C.7.1.1): the
        # patient-consistency check of the intake compares both.
        ("ALTER TABLE studies ADD COLUMN issuer_of_patient_id TEXT",),
    ),
    Migration(
        3,
        "series metadata",
        # WADO-RS metadata of a whole series (what OHIF asks for after its QIDO-RS series
        # search), kept once built: reading 500 headers takes a second, this row milliseconds.
        # Valid while the series row's updated_at is the one it was built at (every committed
        # instance of the series changes it); removed with the series.
        (
            """CREATE TABLE IF NOT EXISTS series_metadata (
            series_instance_uid TEXT PRIMARY KEY REFERENCES series ON DELETE CASCADE,
            series_updated_at REAL NOT NULL,
            instances INTEGER NOT NULL,
            metadata BLOB NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "studies in QIDO-RS order",
        # QIDO-RS answers studies in (date, time, UID) order, a page at a time: with the date
        # alone indexed, every page sorted all the studies (1.7 s a page at 1,000,000 studies),
        # and a date range sorted its matches before the LIMIT. The new index gives the order;
        # it starts with the date, so it serves date matching as the old one did.
        (
            "DROP INDEX IF EXISTS studies_by_date",
            "CREATE INDEX IF NOT EXISTS studies_in_order "
            "ON studies (study_date, study_time, study_instance_uid)",
        ),
    ),
    Migration(
        5,
        "instance metadata",
        # Each instance's WADO-RS metadata (DICOM JSON, the DICOMweb root marked), built at
        # ingest from the header the intake parsed (gateway/store/instance_json.py): a series'
        # metadata before the series is stable is then a concatenation of these, not a read of
        # every file. Written in the instance's transaction; an instance stored without it (its
        # header could not be built in memory) has none, and its file is read when asked.
        (
            """CREATE TABLE IF NOT EXISTS instance_metadata (
            sop_instance_uid TEXT PRIMARY KEY REFERENCES instances ON DELETE CASCADE,
            metadata BLOB NOT NULL
            )""",
        ),
    ),
    Migration(
        6,
        "observer outbox",
        # Instances committed whose observers (the findings index, the stability ledger's
        # arrivals, the forwarder) have not all heard of them yet: written in the instance's
        # transaction, removed once every observer took the group. What stays (an observer
        # failed: its database away; or the process died between the commit and the
        # observers) is delivered again by EmbeddedStore.deliver_unobserved, so an
        # acknowledged instance is never left unindexed or unanalysed.
        (
            """CREATE TABLE IF NOT EXISTS observer_outbox (
            sop_instance_uid TEXT PRIMARY KEY REFERENCES instances ON DELETE CASCADE,
            queued_at REAL NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS observer_outbox_by_age ON observer_outbox (queued_at)",
        ),
    ),
)


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance as the catalog knows it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str
    size: int
    instance_number: int | None = None
    number_of_frames: int | None = None


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    return str(value)


def integer_or_none(dataset: Dataset, keyword: str) -> int | None:
    """An integer attribute's value; None if absent, empty or not an integer."""
    value = dataset.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class Catalog:
    """The SQLite catalog. Open with :meth:`open`; thread-safe."""

    def __init__(self, path: Path):
        self.path = path
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._writer = self._connect()

    @classmethod
    def open(cls, path: Path) -> Catalog:
        path.parent.mkdir(parents=True, exist_ok=True)
        catalog = cls(path)
        migrate(
            "catalog",
            MIGRATIONS,
            catalog._migration_transaction,
            "sqlite",
            legacy_table="schema_version",
        )
        return catalog

    @contextmanager
    def _migration_transaction(self) -> Iterator[sqlite3.Cursor]:
        # BEGIN explicitly: Python's sqlite3 would run DDL outside any transaction.
        with self._write_lock:
            cursor = self._writer.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                self._writer.rollback()
                raise
            self._writer.commit()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable in WAL mode except for the last transactions before a power loss;
        # FULL makes the acknowledgment durable too, which principle 1 asks for.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    def reader(self) -> sqlite3.Connection:
        """A connection for this thread's reads."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.row_factory = sqlite3.Row
            self._local.connection = connection
        return connection

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()

    @contextmanager
    def transaction(self) -> Iterator[CatalogWriter]:
        """One write transaction; committed when the block ends without an exception."""
        with self._write_lock:
            try:
                yield CatalogWriter(self._writer)
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise

    # -- reads -------------------------------------------------------------------------

    def find_instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        row = (
            self.reader()
            .execute("SELECT * FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
            .fetchone()
        )
        return _record(row) if row else None

    def instances(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[InstanceRecord]:
        """The instances at a WADO-RS level, in series then instance-number order."""
        sql = "SELECT i.* FROM instances i WHERE i.study_instance_uid = ?"
        params: list[Any] = [study_instance_uid]
        if series_instance_uid is not None:
            sql += " AND i.series_instance_uid = ?"
            params.append(series_instance_uid)
        if sop_instance_uid is not None:
            sql += " AND i.sop_instance_uid = ?"
            params.append(sop_instance_uid)
        sql += " ORDER BY i.series_instance_uid, i.instance_number, i.sop_instance_uid"
        return [_record(row) for row in self.reader().execute(sql, params)]

    def study_patient(self, study_instance_uid: str) -> PatientIdentity | None:
        """The patient a held study belongs to; None if the study is not held."""
        return _study_patient(self.reader(), study_instance_uid)

    def series_updated_at(
        self, study_instance_uid: str, series_instance_uid: str | None = None
    ) -> dict[str, float]:
        """When each series of the study (or only the one given) last changed: its row's
        ``updated_at``, which every committed instance of the series moves on."""
        sql = "SELECT series_instance_uid, updated_at FROM series WHERE study_instance_uid = ?"
        params: list[str] = [study_instance_uid]
        if series_instance_uid is not None:
            sql += " AND series_instance_uid = ?"
            params.append(series_instance_uid)
        return {uid: float(updated_at) for uid, updated_at in self.reader().execute(sql, params)}

    def series_metadata(self, series_instance_uid: str, updated_at: float) -> bytes | None:
        """The series' metadata kept by :meth:`CatalogWriter.keep_series_metadata`, if it was
        built when the series was as it is (``updated_at``)."""
        row = (
            self.reader()
            .execute(
                "SELECT metadata FROM series_metadata WHERE series_instance_uid = ? "
                "AND series_updated_at = ?",
                (series_instance_uid, updated_at),
            )
            .fetchone()
        )
        return bytes(row[0]) if row is not None else None

    def instance_metadata(
        self, series_instance_uid: str, sop_instance_uid: str | None = None
    ) -> dict[str, bytes]:
        """The metadata kept at ingest for the series' instances (or the one given), by SOP
        Instance UID (:meth:`CatalogWriter.keep_instance_metadata`); instances without any
        are not in it."""
        sql = (
            "SELECT m.sop_instance_uid, m.metadata FROM instances i "
            "JOIN instance_metadata m ON m.sop_instance_uid = i.sop_instance_uid "
            "WHERE i.series_instance_uid = ?"
        )
        params = [series_instance_uid]
        if sop_instance_uid is not None:
            sql += " AND i.sop_instance_uid = ?"
            params.append(sop_instance_uid)
        return {uid: bytes(metadata) for uid, metadata in self.reader().execute(sql, params)}

    def query(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        return list(self.reader().execute(sql, params))

    def observers_done(self, sop_instance_uids: Sequence[str]) -> None:
        """Every observer took these instances: out of the observer outbox.

        Committed without waiting for the disk (``synchronous=NORMAL`` for this transaction
        alone; the WAL is still consistent): lost to a power cut, the rows only mean the
        instances are delivered to the observers once more, which they take as a repeat.
        """
        with self._write_lock:
            self._writer.execute("PRAGMA synchronous=NORMAL")
            try:
                self._writer.executemany(
                    "DELETE FROM observer_outbox WHERE sop_instance_uid = ?",
                    [(uid,) for uid in sop_instance_uids],
                )
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise
            finally:
                self._writer.execute("PRAGMA synchronous=FULL")

    def unobserved(self, queued_before: float, limit: int) -> list[InstanceRecord]:
        """Instances in the observer outbox since before ``queued_before``, oldest first."""
        rows = (
            self.reader()
            .execute(
                """SELECT i.* FROM observer_outbox o
                JOIN instances i ON i.sop_instance_uid = o.sop_instance_uid
                WHERE o.queued_at < ? ORDER BY o.queued_at, i.sop_instance_uid LIMIT ?""",
                (queued_before, limit),
            )
            .fetchall()
        )
        return [_record(row) for row in rows]

    def unobserved_count(self) -> int:
        return int(self.reader().execute("SELECT count(*) FROM observer_outbox").fetchone()[0])

    def due_forwards(self, limit: int) -> list[tuple[InstanceRecord, int]]:
        """Instances due for forwarding, with the attempts made so far, oldest first."""
        rows = (
            self.reader()
            .execute(
                """SELECT i.*, f.attempts FROM forward_outbox f
            JOIN instances i ON i.sop_instance_uid = f.sop_instance_uid
            WHERE f.state = 'pending' AND f.next_attempt_at <= ?
            ORDER BY f.next_attempt_at LIMIT ?""",
                (time.time(), limit),
            )
            .fetchall()
        )
        return [(_record(row), row["attempts"]) for row in rows]

    def forward_backlog(self) -> dict[str, int]:
        rows = (
            self.reader()
            .execute("SELECT state, count(*) FROM forward_outbox GROUP BY state")
            .fetchall()
        )
        return {state: count for state, count in rows}

    def stored_bytes(self) -> int:
        """The bytes of every catalogued instance file (their sizes summed: one table scan)."""
        row = self.reader().execute("SELECT coalesce(sum(size), 0) FROM instances").fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        connection = self.reader()
        return {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("studies", "series", "instances")
        }


class CatalogWriter:
    """Writes inside one transaction (see :meth:`Catalog.transaction`)."""

    def __init__(self, connection: sqlite3.Connection):
        self._connection = connection

    def enqueue_forward(self, record: InstanceRecord) -> None:
        self._connection.execute(
            """INSERT INTO forward_outbox (sop_instance_uid, study_instance_uid, next_attempt_at)
            VALUES (?, ?, ?) ON CONFLICT (sop_instance_uid) DO UPDATE SET
              state='pending', attempts=0, next_attempt_at=excluded.next_attempt_at""",
            (record.sop_instance_uid, record.study_instance_uid, time.time()),
        )

    def await_observers(self, sop_instance_uids: Sequence[str]) -> None:
        """Put the instances (added in this transaction) in the observer outbox."""
        now = time.time()
        self._connection.executemany(
            "INSERT OR REPLACE INTO observer_outbox VALUES (?, ?)",
            [(uid, now) for uid in sop_instance_uids],
        )

    def delete_study(self, study_instance_uid: str) -> bool:
        """Delete the study's rows; False (nothing deleted) while forwards are outstanding."""
        waiting = self._connection.execute(
            "SELECT count(*) FROM forward_outbox WHERE study_instance_uid = ? "
            "AND state = 'pending'",
            (study_instance_uid,),
        ).fetchone()[0]
        if waiting:
            return False
        for table in ("instances", "series", "studies"):
            self._connection.execute(
                f"DELETE FROM {table} WHERE study_instance_uid = ?",
                (study_instance_uid,),
            )
        return True

    def keep_series_metadata(
        self, series_instance_uid: str, updated_at: float, instances: int, metadata: bytes
    ) -> None:
        """Keep a series' WADO-RS metadata, built while the series' ``updated_at`` was that.

        A row built from an older state of the series is never written over a newer one."""
        self._connection.execute(
            """INSERT INTO series_metadata VALUES (?, ?, ?, ?)
            ON CONFLICT (series_instance_uid) DO UPDATE SET
              series_updated_at = excluded.series_updated_at,
              instances = excluded.instances, metadata = excluded.metadata
            WHERE excluded.series_updated_at >= series_metadata.series_updated_at""",
            (series_instance_uid, updated_at, instances, metadata),
        )

    def keep_instance_metadata(self, metadata: Sequence[tuple[str, bytes | None]]) -> None:
        """Keep each (SOP Instance UID, metadata) given, in the transaction that adds the
        instances; None removes what an earlier copy of the instance left."""
        self._connection.executemany(
            "DELETE FROM instance_metadata WHERE sop_instance_uid = ?",
            [(uid,) for uid, kept in metadata if kept is None],
        )
        self._connection.executemany(
            "INSERT OR REPLACE INTO instance_metadata VALUES (?, ?)",
            [(uid, kept) for uid, kept in metadata if kept is not None],
        )

    def forward_succeeded(self, sop_instance_uids: Sequence[str]) -> None:
        self._connection.executemany(
            "DELETE FROM forward_outbox WHERE sop_instance_uid = ?",
            [(uid,) for uid in sop_instance_uids],
        )

    def forward_failed(
        self, sop_instance_uid: str, error: str, next_attempt_at: float, give_up: bool
    ) -> None:
        self._connection.execute(
            """UPDATE forward_outbox SET attempts = attempts + 1, last_error = ?,
            next_attempt_at = ?, state = ? WHERE sop_instance_uid = ?""",
            (error[:500], next_attempt_at, "failed" if give_up else "pending", sop_instance_uid),
        )

    def study_patient(self, study_instance_uid: str) -> PatientIdentity | None:
        """:meth:`Catalog.study_patient`, as this transaction sees it."""
        return _study_patient(self._connection, study_instance_uid)

    def add_instances(self, stored: Sequence[tuple[Dataset, InstanceRecord]]) -> None:
        """Insert or replace the instances, and refresh their study and series rows.

        A study's and a series' rows are written once per call, from the last of their
        instances given (the same values an upsert per instance would leave), so that a group
        of a series' slices costs one study and one series upsert, not one per slice.
        """
        now = time.time()
        last_of_study: dict[str, Dataset] = {}
        last_of_series: dict[str, tuple[Dataset, InstanceRecord]] = {}
        for dataset, record in stored:
            last_of_study[record.study_instance_uid] = dataset
            last_of_series[record.series_instance_uid] = (dataset, record)
        # The study's patient never changes once held (docs/dicomweb.md, "Patient identity"):
        # PatientID and its issuer stay those of the first instance; name, birth date and
        # sex only fill what the study did not have. With ingest.patient_mismatch: accept,
        # an instance of another patient keeps its own attributes in its file only.
        self._connection.executemany(
            """INSERT INTO studies (study_instance_uid, patient_id, patient_name,
              patient_birth_date, patient_sex, study_date, study_time, accession_number,
              study_id, study_description, referring_physician_name, updated_at,
              issuer_of_patient_id)
            VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
            ON CONFLICT (study_instance_uid) DO UPDATE SET
              patient_name=COALESCE(studies.patient_name, excluded.patient_name),
              patient_birth_date=COALESCE(studies.patient_birth_date,
                                          excluded.patient_birth_date),
              patient_sex=COALESCE(studies.patient_sex, excluded.patient_sex),
              issuer_of_patient_id=CASE WHEN studies.patient_id IS excluded.patient_id
                THEN COALESCE(studies.issuer_of_patient_id, excluded.issuer_of_patient_id)
                ELSE studies.issuer_of_patient_id END,
              study_date=excluded.study_date, study_time=excluded.study_time,
              accession_number=excluded.accession_number, study_id=excluded.study_id,
              study_description=excluded.study_description,
              referring_physician_name=excluded.referring_physician_name,
              updated_at=excluded.updated_at""",
            [
                (
                    study_uid,
                    *(_text(dataset, keyword) for keyword in _STUDY_KEYWORDS),
                    now,
                    _text(dataset, "IssuerOfPatientID"),
                )
                for study_uid, dataset in last_of_study.items()
            ],
        )
        self._connection.executemany(
            """INSERT INTO series VALUES (?,?,?,?,?,?,?,?,?)
            ON CONFLICT (series_instance_uid) DO UPDATE SET
              modality=excluded.modality, series_number=excluded.series_number,
              series_description=excluded.series_description,
              body_part_examined=excluded.body_part_examined,
              performed_procedure_step_start_date=excluded.performed_procedure_step_start_date,
              performed_procedure_step_start_time=excluded.performed_procedure_step_start_time,
              updated_at=excluded.updated_at""",
            [
                (
                    series_uid,
                    record.study_instance_uid,
                    _text(dataset, "Modality"),
                    integer_or_none(dataset, "SeriesNumber"),
                    _text(dataset, "SeriesDescription"),
                    _text(dataset, "BodyPartExamined"),
                    _text(dataset, "PerformedProcedureStepStartDate"),
                    _text(dataset, "PerformedProcedureStepStartTime"),
                    now,
                )
                for series_uid, (dataset, record) in last_of_series.items()
            ],
        )
        self._connection.executemany(
            "INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    record.sop_instance_uid,
                    record.series_instance_uid,
                    record.study_instance_uid,
                    record.sop_class_uid,
                    *(integer_or_none(dataset, keyword) for keyword in _INSTANCE_INTEGERS),
                    record.transfer_syntax_uid,
                    record.path,
                    record.size,
                    now,
                )
                for dataset, record in stored
            ],
        )


#: The study row's attributes, in the order of its columns after the StudyInstanceUID.
_STUDY_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
)
#: The instance row's integer attributes, in the order of its columns.
_INSTANCE_INTEGERS = ("InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames")


def _study_patient(
    connection: sqlite3.Connection, study_instance_uid: str
) -> PatientIdentity | None:
    row = connection.execute(
        "SELECT patient_id, issuer_of_patient_id, patient_name, patient_birth_date, "
        "patient_sex FROM studies WHERE study_instance_uid = ?",
        (study_instance_uid,),
    ).fetchone()
    return PatientIdentity(*row) if row is not None else None


def _record(row: sqlite3.Row) -> InstanceRecord:
    return InstanceRecord(
        study_instance_uid=row["study_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        path=row["path"],
        size=row["size"],
        instance_number=row["instance_number"],
        number_of_frames=row["number_of_frames"],
    )
