"""The findings index: what a site holds, as cohort attributes and findings, without identifiers.

Fed by every intake path (:meth:`FindingsIndex.observe_instances`, once per STOW request), by
the pipeline's own SRs, and rebuilt from the PACS by ``fedgate index sync``. The federated API
reads it; it never reads images.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog
from pydicom.dataset import Dataset

from gateway.index.attributes import MissingIdentity, series_record, study_record
from gateway.index.columnar import ColumnarCopy
from gateway.index.database import Cursor, Database, Row
from gateway.index.keys import Pseudonymizer, load_or_create_salt
from gateway.index.records import ReportRecord, SeriesRecord, StudyRecord
from gateway.index.schema import migrate, refresh_study_measurements
from gateway.index.settings import IndexSettings
from gateway.index.structured_reports import is_structured_report, report_record

log = structlog.get_logger(__name__)

SQLITE_FILE_NAME = "findings-index.sqlite3"

#: How often the changes the columnar copy already holds are deleted from ``index_changes``.
PRUNE_EVERY_SECONDS = 600.0

_UPSERT_STUDY = """
INSERT INTO studies (study_key, patient_key, patient_sex, age_years, study_date, study_year,
                     study_month)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (study_key) DO UPDATE SET
    -- patient_key is not updated: a study never moves to another patient (issue 13, item 2).
    patient_sex = COALESCE(studies.patient_sex, excluded.patient_sex),
    age_years = COALESCE(studies.age_years, excluded.age_years),
    study_date = COALESCE(excluded.study_date, studies.study_date),
    study_year = COALESCE(excluded.study_year, studies.study_year),
    study_month = COALESCE(excluded.study_month, studies.study_month)
"""

_UPSERT_SERIES = """
INSERT INTO series (series_key, study_key, patient_key, modality, body_part, manufacturer,
                    manufacturer_model)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (series_key) DO UPDATE SET
    modality = COALESCE(excluded.modality, series.modality),
    body_part = COALESCE(excluded.body_part, series.body_part),
    manufacturer = COALESCE(excluded.manufacturer, series.manufacturer),
    manufacturer_model = COALESCE(excluded.manufacturer_model, series.manufacturer_model)
"""


class FindingsIndex:
    """The per-site index of studies, series and findings (SQLite or PostgreSQL)."""

    def __init__(
        self, database: Database, keys: Pseudonymizer, settings: IndexSettings, data_dir: Path
    ):
        self.database = database
        self.data_dir = data_dir
        self.keys = keys
        self.settings = settings
        #: The columnar copy answering :meth:`analytic_query` (:meth:`use_columnar_copy`).
        self.copy: ColumnarCopy | None = None
        self._pruned_at = 0.0
        # Series already written: the 2nd..Nth instance of a series costs no database write.
        self._seen_series: OrderedDict[int, None] = OrderedDict()

    @classmethod
    def open(cls, settings: IndexSettings, data_dir: Path) -> FindingsIndex:
        """Open (creating and migrating if needed) the index for a site whose data is in
        ``data_dir``; the salt always lives in ``data_dir``, even with PostgreSQL."""
        keys = Pseudonymizer(load_or_create_salt(data_dir))
        if settings.url:
            database = Database.postgresql(settings.url)
        else:
            database = Database.sqlite(data_dir / SQLITE_FILE_NAME)
        migrate(database)
        return cls(database, keys, settings, data_dir)

    def use_columnar_copy(self) -> ColumnarCopy | None:
        """Answer :meth:`analytic_query` from a columnar copy of this index (embedded index
        only; the process that serves the federated API calls this, once). The copy is
        opened, caught up or built in the background."""
        if self.database.dialect != "sqlite" or not self.settings.columnar_copy:
            return None
        if self.copy is None:
            self.copy = ColumnarCopy.open(
                self.data_dir / SQLITE_FILE_NAME, self.settings.columnar_memory_mb
            )
        return self.copy

    def close(self) -> None:
        if self.copy is not None:
            self.copy.close()
        self.database.close()

    # -- analysis ----------------------------------------------------------------------------

    def analytic_query(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        """A cohort's SELECT: over the columnar copy when it is current (it catches up with
        the index's writes first), else over the index itself. The answers are the same;
        the copy's are faster (docs/benchmarks.md, issue 19)."""
        if self.copy is not None:
            rows = self.copy.query(statement, params)
            if rows is not None:
                self._prune_changes()
                return rows
        return self.database.query(statement, params)

    def analytic_columns(self, statement: str, params: Sequence[object] = ()) -> list[Any]:
        """:meth:`analytic_query`'s answer by column: NumPy arrays (masked where NULL) from
        the copy, or sequences of the index's values; empty when there are no rows."""
        if self.copy is not None:
            columns = self.copy.query_columns(statement, params)
            if columns is not None:
                self._prune_changes()
                return columns if len(columns) and len(columns[0]) else []
        rows = self.database.query(statement, params)
        return [list(column) for column in zip(*rows, strict=True)]

    def _prune_changes(self) -> None:
        """Forget the changes the copy holds, now and then (keeping the last: it tells a
        later catch-up where the index stands)."""
        if self.copy is None or time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = time.monotonic()
        mark = self.copy.mark()
        if mark is not None:
            self.database.execute("DELETE FROM index_changes WHERE change_id < ?", (mark,))

    # -- intake -------------------------------------------------------------------------------

    def observe_instance(self, dataset: Dataset) -> None:
        self.observe_instances([dataset])

    def observe_instances(self, datasets: Sequence[Dataset]) -> None:
        """Learn the studies and series of stored instances, and the findings of their SRs.

        ``datasets`` may be header-only (no pixel data); SRs must be complete. One transaction
        per call: call it once per STOW request, not once per instance.
        """
        studies: dict[int, StudyRecord] = {}
        series: dict[int, SeriesRecord] = {}
        reports: list[ReportRecord] = []
        # A series' slices share its study and series attributes: read them from its first
        # instance here (keys are HMACs and dates are parsed: not free, per slice).
        series_read: set[str] = set()
        for dataset in datasets:
            series_uid = str(dataset.get("SeriesInstanceUID") or "")
            if series_uid in series_read and not is_structured_report(dataset):
                continue
            series_read.add(series_uid)
            try:
                study = study_record(dataset, self.keys)
                one_series = series_record(dataset, study, self.keys)
            except MissingIdentity as error:
                log.warning("index.instance_skipped", reason=str(error))
                continue
            report = None
            if is_structured_report(dataset):
                report = report_record(dataset, study, self.keys)
                if report is not None:
                    reports.append(report)
            if one_series.series_key in self._seen_series and report is None:
                continue
            studies[study.study_key] = study
            series[one_series.series_key] = one_series
        if not studies and not reports:
            return
        self.write(studies.values(), series.values(), reports)
        for series_key in series:
            self._remember_series(series_key)

    def _remember_series(self, series_key: int) -> None:
        if self.settings.seen_series_cache == 0:
            return
        self._seen_series[series_key] = None
        self._seen_series.move_to_end(series_key)
        while len(self._seen_series) > self.settings.seen_series_cache:
            self._seen_series.popitem(last=False)

    def write(
        self,
        studies: Iterable[StudyRecord],
        series: Iterable[SeriesRecord] = (),
        reports: Iterable[ReportRecord] = (),
    ) -> None:
        """Upsert studies and series, and replace the findings of each report, in one
        transaction. The intake path, ``fedgate index sync``, tests and benchmarks use it."""
        study_rows = [
            (
                s.study_key,
                s.patient_key,
                s.patient_sex,
                s.age_years,
                s.study_date,
                s.study_year,
                s.study_month,
            )
            for s in studies
        ]
        series_rows = [
            (
                s.series_key,
                s.study_key,
                s.patient_key,
                s.modality,
                s.body_part,
                s.manufacturer,
                s.manufacturer_model,
            )
            for s in series
        ]
        report_list = list(reports)
        with self.database.transaction() as cursor:
            if study_rows:
                cursor.executemany(_UPSERT_STUDY, study_rows)
            if series_rows:
                cursor.executemany(_UPSERT_SERIES, series_rows)
                self._update_modalities(cursor, sorted({row[1] for row in series_rows}))
            for report in report_list:
                self._replace_report(cursor, report)
            if report_list:
                refresh_study_measurements(cursor, sorted({r.study_key for r in report_list}))
            if self.database.dialect == "sqlite":
                # For the columnar copy: the studies whose rows this write changed.
                touched = {row[0] for row in study_rows} | {row[1] for row in series_rows}
                touched |= {r.study_key for r in report_list}
                cursor.executemany(
                    "INSERT INTO index_changes (study_key) VALUES (?)",
                    [(key,) for key in sorted(touched)],
                )

    @staticmethod
    def _update_modalities(cursor: Cursor, study_keys: list[int]) -> None:
        """Refresh ``studies.modalities`` ('/CT/SR/') of these studies from their series."""
        for start in range(0, len(study_keys), 500):
            chunk = study_keys[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            cursor.execute(
                f"SELECT DISTINCT study_key, modality FROM series "
                f"WHERE study_key IN ({marks}) AND modality IS NOT NULL",
                chunk,
            )
            found: dict[int, set[str]] = {key: set() for key in chunk}
            for study_key, modality in cursor.fetchall():
                found[study_key].add(modality)
            cursor.executemany(
                "UPDATE studies SET modalities = ? WHERE study_key = ?",
                [("/" + "/".join(sorted(m)) + "/" if m else None, key) for key, m in found.items()],
            )

    def _replace_report(self, cursor: Cursor, report: ReportRecord) -> None:
        key = (report.report_key,)
        finding_keys = "SELECT finding_key FROM findings WHERE report_key = ?"
        cursor.execute(f"DELETE FROM measurements WHERE finding_key IN ({finding_keys})", key)
        cursor.execute(f"DELETE FROM qualitative WHERE finding_key IN ({finding_keys})", key)
        cursor.execute("DELETE FROM findings WHERE report_key = ?", key)
        cursor.execute(
            "INSERT INTO reports (report_key, study_key, patient_key) VALUES (?, ?, ?) "
            "ON CONFLICT (report_key) DO UPDATE SET study_key = excluded.study_key, "
            "patient_key = excluded.patient_key",
            (report.report_key, report.study_key, report.patient_key),
        )
        finding_rows: list[tuple[object, ...]] = []
        measurement_rows: list[tuple[object, ...]] = []
        qualitative_rows: list[tuple[object, ...]] = []
        for number, finding in enumerate(report.findings):
            finding_key = self.keys.key("finding", f"{report.report_key}:{number}")
            finding_rows.append(
                (
                    finding_key,
                    report.report_key,
                    report.study_key,
                    report.patient_key,
                    finding.finding_type,
                    finding.finding_site,
                    finding.algorithm_name,
                    finding.algorithm_version,
                    finding.presence,
                )
            )
            measurement_rows.extend(
                (
                    finding_key,
                    report.study_key,
                    report.patient_key,
                    finding.finding_type,
                    m.concept,
                    m.value,
                    m.unit,
                    finding.presence,
                )
                for m in finding.measurements
            )
            qualitative_rows.extend(
                (finding_key, concept, value) for concept, value in finding.qualitative
            )
        if finding_rows:
            cursor.executemany(
                "INSERT INTO findings (finding_key, report_key, study_key, patient_key, "
                "finding_type, finding_site, algorithm_name, algorithm_version, presence) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                finding_rows,
            )
        if measurement_rows:
            cursor.executemany(
                "INSERT INTO measurements (finding_key, study_key, patient_key, finding_type, "
                "concept, value, unit, presence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                measurement_rows,
            )
        if qualitative_rows:
            cursor.executemany(
                "INSERT INTO qualitative (finding_key, concept, value) VALUES (?, ?, ?)",
                qualitative_rows,
            )

    # -- inspection ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many rows each table holds (for ``fedgate index`` and health checks)."""
        result = {}
        for table in ("studies", "series", "reports", "findings", "measurements"):
            result[table] = int(self.database.query(f"SELECT COUNT(*) FROM {table}")[0][0])
        return result
