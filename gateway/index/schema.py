"""The index's schema and its migrations, applied by :mod:`gateway.migrations`.

Each migration is a numbered list of statements. Statements use three type placeholders so
one text serves SQLite and PostgreSQL.

What the index holds (DESIGN.md principle 3): no names, no identifiers, no UIDs and no birth
dates. Patients, studies, series, reports and findings are keyed by salted 64-bit hashes
(:mod:`gateway.index.keys`). The study date is kept (as an integer ``YYYYMMDD``) only so that
cohorts can filter on date ranges; no aggregate ever returns it, only its year.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.index.database import Cursor, Database
from gateway.migrations import Migration, SchemaError
from gateway.migrations import migrate as run_migrations
from tabular.presence import ABSENCE_VALUES, PRESENCE_CONCEPTS


def _sql_list(codes: Iterable[str]) -> str:
    return ", ".join(f"'{code}'" for code in sorted(codes))


#: :func:`tabular.presence.presence_of` in SQL over ``findings`` and ``qualitative``, for the
#: migration that marks the rows of an index written before presence was recorded.
ABSENT_ROWS_SQL = (
    "EXISTS (SELECT 1 FROM qualitative q WHERE q.finding_key = findings.finding_key "
    f"AND q.value IN ({_sql_list(ABSENCE_VALUES)}) "
    f"AND (q.concept IN ({_sql_list(PRESENCE_CONCEPTS)}) OR q.concept = findings.finding_type))"
)


__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "STUDY_MEASUREMENTS_SELECT",
    "SchemaError",
    "migrate",
    "refresh_study_measurements",
]

_TYPES = {
    "sqlite": {"{SERIAL}": "INTEGER PRIMARY KEY AUTOINCREMENT", "{BLOB}": "BLOB", "{REAL}": "REAL"},
    "postgresql": {
        "{SERIAL}": "BIGSERIAL PRIMARY KEY",
        "{BLOB}": "BYTEA",
        "{REAL}": "DOUBLE PRECISION",
    },
}

#: The rows of ``study_measurements`` from ``measurements`` (add a WHERE on ``study_key``
#: before the GROUP BY's text to refresh some studies only: :data:`STUDY_MEASUREMENTS_GROUP`).
STUDY_MEASUREMENTS_COLUMNS = (
    "study_key, concept, unit, finding_type, presence, MIN(value), MAX(value)"
)
STUDY_MEASUREMENTS_GROUP = "GROUP BY study_key, concept, unit, finding_type, presence"
STUDY_MEASUREMENTS_SELECT = (
    f"SELECT {STUDY_MEASUREMENTS_COLUMNS} FROM measurements {STUDY_MEASUREMENTS_GROUP}"
)

MIGRATIONS: dict[int, list[str]] = {
    1: [
        # The cohort attributes of every study and series the site holds, analysed or not.
        """CREATE TABLE studies (
            study_key BIGINT PRIMARY KEY,
            patient_key BIGINT NOT NULL,
            patient_sex TEXT,
            age_years INTEGER,
            study_date INTEGER,
            study_year INTEGER,
            study_month INTEGER,
            -- QIDO's ModalitiesInStudy, as '/CT/SR/' (kept from the series rows): "has a CT
            -- series" is then a test on the study row instead of an index probe per study.
            modalities TEXT
        )""",
        "CREATE INDEX studies_patient ON studies (patient_key)",
        "CREATE INDEX studies_date ON studies (study_date)",
        """CREATE TABLE series (
            series_key BIGINT PRIMARY KEY,
            study_key BIGINT NOT NULL,
            patient_key BIGINT NOT NULL,
            modality TEXT,
            body_part TEXT,
            manufacturer TEXT,
            manufacturer_model TEXT
        )""",
        "CREATE INDEX series_study ON series (study_key, modality, body_part)",
        "CREATE INDEX series_modality ON series (modality, study_key)",
        "CREATE INDEX series_patient ON series (patient_key, modality)",
        # One row per TID 1500 SR read, so that a re-sent SR replaces its findings.
        """CREATE TABLE reports (
            report_key BIGINT PRIMARY KEY,
            study_key BIGINT NOT NULL,
            patient_key BIGINT NOT NULL
        )""",
        """CREATE TABLE findings (
            finding_key BIGINT PRIMARY KEY,
            report_key BIGINT NOT NULL,
            study_key BIGINT NOT NULL,
            patient_key BIGINT NOT NULL,
            finding_type TEXT,  -- NULL: a group without a Finding (e.g. OHIF's)
            finding_site TEXT,
            algorithm_name TEXT,
            algorithm_version TEXT
        )""",
        "CREATE INDEX findings_type ON findings (finding_type, study_key)",
        "CREATE INDEX findings_study ON findings (study_key, finding_type, finding_site)",
        "CREATE INDEX findings_report ON findings (report_key)",
        "CREATE INDEX findings_patient ON findings (patient_key, finding_type)",
        # The finding's study, patient and type are repeated here so that "a nodule of 8 mm
        # or more in this study" is one covering-index probe per study, not a join per finding.
        """CREATE TABLE measurements (
            finding_key BIGINT NOT NULL,
            study_key BIGINT NOT NULL,
            patient_key BIGINT NOT NULL,
            finding_type TEXT,
            concept TEXT NOT NULL,
            value {REAL} NOT NULL,
            unit TEXT NOT NULL
        )""",
        "CREATE INDEX measurements_study ON measurements "
        "(study_key, concept, unit, finding_type, value)",
        "CREATE INDEX measurements_finding ON measurements (finding_key, concept, unit, value)",
        """CREATE TABLE qualitative (
            finding_key BIGINT NOT NULL,
            concept TEXT NOT NULL,
            value TEXT NOT NULL
        )""",
        "CREATE INDEX qualitative_concept ON qualitative (concept, value, finding_key)",
        "CREATE INDEX qualitative_finding ON qualitative (finding_key)",
    ],
    2: [
        # Disclosure-control state, kept beside the data it protects so that several gateway
        # replicas on one PostgreSQL share one budget ledger and one query history.
        """CREATE TABLE privacy_ledger (
            entry_id {SERIAL},
            client TEXT NOT NULL,
            spent_at TEXT NOT NULL,
            epsilon {REAL} NOT NULL,
            delta {REAL} NOT NULL,
            answer_key TEXT NOT NULL
        )""",
        "CREATE INDEX privacy_ledger_client ON privacy_ledger (client)",
        # Keyed on the answer (aggregate + cohort membership), not on the client: two clients
        # asking one question get one draw of noise, so colluding cannot average it out.
        """CREATE TABLE answer_cache (
            answer_key TEXT PRIMARY KEY,
            answer TEXT NOT NULL,
            first_client TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE query_history (
            query_id {SERIAL},
            asked_at {REAL} NOT NULL,
            client TEXT NOT NULL,
            level TEXT NOT NULL,
            definition TEXT NOT NULL,
            patient_count INTEGER NOT NULL,
            patients {BLOB} NOT NULL,
            units {BLOB} NOT NULL,
            unit_patients {BLOB} NOT NULL
        )""",
        "CREATE INDEX query_history_size ON query_history (patient_count, asked_at)",
        # ``fedgate index sync`` resumes from here: studies already crawled are skipped.
        """CREATE TABLE sync_state (
            study_key BIGINT PRIMARY KEY,
            synced_at TEXT NOT NULL
        )""",
    ],
    3: [
        # Whether a finding row says its type is there or is not (tabular.presence):
        # "Nodule: Presence = Absent" is no nodule. Denormalised onto measurements like the
        # finding type, so that "a nodule of 8 mm or more" stays one covering-index probe.
        "ALTER TABLE findings ADD COLUMN presence TEXT NOT NULL DEFAULT 'present'",
        "ALTER TABLE measurements ADD COLUMN presence TEXT NOT NULL DEFAULT 'present'",
        f"UPDATE findings SET presence = 'absent' WHERE {ABSENT_ROWS_SQL}",
        "UPDATE measurements SET presence = 'absent' WHERE finding_key IN "
        "(SELECT finding_key FROM findings WHERE presence = 'absent')",
        "DROP INDEX findings_study",
        "CREATE INDEX findings_study ON findings (study_key, finding_type, presence, finding_site)",
        "DROP INDEX measurements_study",
        "CREATE INDEX measurements_study ON measurements "
        "(study_key, concept, unit, finding_type, presence, value)",
        # A report indexed before this version with no finding at all keeps no row: it is
        # read again (and gets its "found nothing" row) when re-sent or by 'fedgate index sync
        # --full'.
    ],
    4: [
        # The differencing guard is gone (its refusals were answers about the data; issue 14):
        # the patient keys of every cohort it answered go with it. The answer cache is keyed
        # on the canonical question from now on, so answers kept under membership keys would
        # never be found again.
        "DROP TABLE query_history",
        "DELETE FROM answer_cache",
    ],
    5: [
        # Per study, per measured (concept, unit, finding type, presence): the smallest and
        # largest value (issue 19). "A nodule of 8 mm or more in this study" is then one probe
        # of a few rows per study instead of the study's every measurement; the probe per
        # candidate study is what a cohort's count costs. Refreshed with a report's findings
        # (FindingsIndex.write).
        """CREATE TABLE study_measurements (
            study_key BIGINT NOT NULL,
            concept TEXT NOT NULL,
            unit TEXT NOT NULL,
            finding_type TEXT,
            presence TEXT NOT NULL,
            low {REAL} NOT NULL,
            high {REAL} NOT NULL
        )""",
        "CREATE INDEX study_measurements_study ON study_measurements "
        "(study_key, concept, unit, finding_type, presence, high, low)",
        f"INSERT INTO study_measurements {STUDY_MEASUREMENTS_SELECT}",
    ],
    6: [
        # The studies each write touched, in commit order (issue 19): the columnar copy
        # (gateway.index.columnar) replaces their rows before it answers. Written by the
        # embedded index only (the copy's only source); pruned up to the copy's mark.
        """CREATE TABLE index_changes (
            change_id {SERIAL},
            study_key BIGINT NOT NULL
        )""",
    ],
}

LATEST_VERSION = max(MIGRATIONS)


def migrate(database: Database) -> int:
    """Apply every migration not yet applied; returns the schema version now in force.

    Replicas starting together on one PostgreSQL take turns (an advisory lock)."""
    types = _TYPES[database.dialect]

    def written_for_dialect(statement: str) -> str:
        for placeholder, sql_type in types.items():
            statement = statement.replace(placeholder, sql_type)
        return statement

    migrations = [
        Migration(version, f"index {version}", tuple(map(written_for_dialect, statements)))
        for version, statements in sorted(MIGRATIONS.items())
    ]
    return run_migrations(
        "index",
        migrations,
        database.transaction,
        database.dialect,
        legacy_table="schema_migrations",
        exclusive=database.exclusive("fedgate-index-migrate"),
        upgrade_hint="upgrade fedgate or rebuild with 'fedgate index sync'",
    )


def refresh_study_measurements(cursor: Cursor, study_keys: Sequence[int]) -> None:
    """Recompute the ``study_measurements`` rows of these studies from their measurements
    (after their reports' findings were replaced), in chunks of 500 keys."""
    for start in range(0, len(study_keys), 500):
        chunk = list(study_keys[start : start + 500])
        marks = ", ".join("?" for _ in chunk)
        cursor.execute(f"DELETE FROM study_measurements WHERE study_key IN ({marks})", chunk)
        cursor.execute(
            f"INSERT INTO study_measurements SELECT {STUDY_MEASUREMENTS_COLUMNS} "
            f"FROM measurements WHERE study_key IN ({marks}) {STUDY_MEASUREMENTS_GROUP}",
            chunk,
        )
