"""A site admin's decisions on what the federation may run here: training plans and analysis
bundles, each identified by a sha256.

Nothing a hub sends runs at a site until the site's admin has approved that exact content: a
federated-learning plan (``fedgate learn approve``), a federated-analysis bundle (model +
cohort). One mechanism for both, as Kaapana asks each site per workflow and MONAI's Workflow
Manager gates results by review. A changed plan or bundle has another sha256 and so needs a new
approval.

Every decision is a row that is never updated or deleted (approved, refused, revoked; who, when,
why): the table is its own audit trail, and the decision in force is the latest. It lives in
the findings index's database, so replicas of a gateway on one PostgreSQL share it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from gateway.index.database import Database
from gateway.index.findings_index import SQLITE_FILE_NAME
from gateway.index.settings import IndexSettings
from gateway.migrations import Migration, migrate

__all__ = ["Approvals", "Decision", "DecisionName", "Kind", "SubjectError"]

Kind = Literal["training-plan", "analysis-bundle"]
DecisionName = Literal["approved", "refused", "revoked"]
KINDS: tuple[Kind, ...] = get_args(Kind)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_SERIAL = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgresql": "BIGSERIAL PRIMARY KEY"}


def _migrations(dialect: str) -> list[Migration]:
    return [
        Migration(
            1,
            "approvals 1",
            (
                f"""CREATE TABLE approval_decisions (
                    decision_id {_SERIAL[dialect]},
                    kind TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    decision TEXT NOT NULL,
                    decided_by TEXT NOT NULL,
                    decided_at TEXT NOT NULL,
                    note TEXT NOT NULL
                )""",
                "CREATE INDEX approval_decisions_subject "
                "ON approval_decisions (kind, sha256, decision_id)",
            ),
        )
    ]


class SubjectError(ValueError):
    """Not a kind this site decides on, or not a sha256 (64 lower-case hex digits)."""


@dataclass(frozen=True)
class Decision:
    kind: Kind
    sha256: str
    decision: DecisionName
    decided_by: str
    decided_at: str  # ISO 8601, UTC
    note: str


def _checked(kind: str, sha256: str) -> tuple[Kind, str]:
    if kind not in KINDS:
        raise SubjectError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    digest = sha256.strip().lower()
    if not _SHA256.match(digest):
        raise SubjectError(f"{sha256!r} is not a sha256 (64 hexadecimal digits)")
    return kind, digest


class Approvals:
    """The decisions of one site, in its index database."""

    def __init__(self, database: Database):
        self.database = database
        migrate(
            "approvals",
            _migrations(database.dialect),
            database.transaction,
            database.dialect,
            exclusive=database.exclusive("fedgate-approvals-migrate"),
        )

    @classmethod
    def open(cls, settings: IndexSettings, data_dir: Path) -> Approvals:
        """The approvals of the site whose index is configured by ``settings``."""
        if settings.url:
            return cls(Database.postgresql(settings.url))
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(Database.sqlite(data_dir / SQLITE_FILE_NAME))

    def close(self) -> None:
        self.database.close()

    def decide(
        self, kind: str, sha256: str, decision: DecisionName, *, by: str, note: str = ""
    ) -> Decision:
        """Record a decision; it is in force from now until the next one on the same subject."""
        checked_kind, digest = _checked(kind, sha256)
        if decision not in get_args(DecisionName):
            raise SubjectError(f"decision must be approved, refused or revoked, not {decision!r}")
        if not by.strip():
            raise SubjectError("a decision names who took it")
        made = Decision(
            checked_kind,
            digest,
            decision,
            by.strip(),
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            note,
        )
        self.database.execute(
            "INSERT INTO approval_decisions (kind, sha256, decision, decided_by, decided_at, note)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (made.kind, made.sha256, made.decision, made.decided_by, made.decided_at, made.note),
        )
        return made

    def current(self, kind: str, sha256: str) -> Decision | None:
        """The decision in force on this content, or None when none was ever taken."""
        checked_kind, digest = _checked(kind, sha256)
        rows = self.database.query(
            "SELECT kind, sha256, decision, decided_by, decided_at, note FROM approval_decisions"
            " WHERE kind = ? AND sha256 = ? ORDER BY decision_id DESC LIMIT 1",
            (checked_kind, digest),
        )
        return Decision(*rows[0]) if rows else None

    def is_approved(self, kind: str, sha256: str) -> bool:
        decision = self.current(kind, sha256)
        return decision is not None and decision.decision == "approved"

    def history(self, kind: str | None = None) -> list[Decision]:
        """Every decision, oldest first (of one kind, or all)."""
        if kind is not None and kind not in KINDS:
            raise SubjectError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        where, params = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        rows = self.database.query(
            "SELECT kind, sha256, decision, decided_by, decided_at, note FROM approval_decisions"
            f" {where} ORDER BY decision_id",
            params,
        )
        return [Decision(*row) for row in rows]
