"""A site admin's decisions on what the federation may run here: training plans and analysis
bundles, each identified by a sha256.

Nothing a hub sends runs at a site until the site's admin has approved that exact content: a
federated-learning plan (``fedgate learn approve``), a federated-analysis bundle (model +
cohort). One mechanism for both, as Kaapana asks each site per workflow and MONAI's Workflow
Manager gates results by review. A changed plan or bundle has another sha256 and so needs a new
approval.

A site learns of a training plan only when a federated-learning run asks its SuperNode to
train it: the ClientApp then records the request (:meth:`Approvals.ask`: the plan's text, who
asked, when first and last), so that the admin can read what is asked before deciding
(``GET /approvals``, the dashboard's jobs page).

Every decision is a row that is never updated or deleted (approved, refused, revoked; who, when,
why): the table is its own audit trail, and the decision in force is the latest. It lives in
the findings index's database, so replicas of a gateway on one PostgreSQL share it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from gateway.index.database import Database
from gateway.index.findings_index import SQLITE_FILE_NAME
from gateway.index.settings import IndexSettings
from gateway.migrations import Migration, migrate

__all__ = ["PLAN_KIND", "Approvals", "Decision", "DecisionName", "Kind", "Request", "SubjectError"]

Kind = Literal["training-plan", "analysis-bundle"]
DecisionName = Literal["approved", "refused", "revoked"]
KINDS: tuple[Kind, ...] = get_args(Kind)
#: What a site decides on for federated learning (``fedgate learn approve``, the ClientApp).
PLAN_KIND: Kind = "training-plan"

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
        ),
        Migration(
            2,
            "approvals 2: requests",
            # One row per subject asked for, refreshed by each new request (the decisions keep
            # their own history): what an admin reads before deciding.
            (
                """CREATE TABLE approval_requests (
                    kind TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    content TEXT NOT NULL,
                    summary TEXT NOT NULL,
                    first_asked_at TEXT NOT NULL,
                    last_asked_at TEXT NOT NULL,
                    asked_by TEXT NOT NULL,
                    times_asked INTEGER NOT NULL,
                    PRIMARY KEY (kind, sha256)
                )""",
            ),
        ),
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


@dataclass(frozen=True)
class Request:
    """Something the federation asked this site to run, not necessarily decided on yet."""

    kind: Kind
    sha256: str
    content: str  # what is asked for, as the admin reads it (a training plan's YAML)
    summary: dict[str, Any]  # a few words on it from the asker (a plan's name and features)
    first_asked_at: str  # ISO 8601, UTC
    last_asked_at: str
    asked_by: str  # who asked last (the federation's run, as the ClientApp names it)
    times_asked: int


#: The largest text a request keeps (a training plan is a few kB).
MAX_REQUEST_CONTENT = 256 * 1024

_REQUEST_COLUMNS = (
    "kind, sha256, content, summary, first_asked_at, last_asked_at, asked_by, times_asked"
)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
            _now(),
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

    def ask(
        self, kind: str, sha256: str, *, content: str, summary: dict[str, Any], by: str
    ) -> Request:
        """Record that ``by`` asks this site to run ``content`` (or refresh the request: the
        last time and asker, one more time asked; the first time is kept).

        A training plan's ``content`` must be the text whose sha256 it is: the admin approves
        exactly what they read, never a text that merely claims the same identity.
        """
        checked_kind, digest = _checked(kind, sha256)
        if not by.strip():
            raise SubjectError("a request names who asks")
        if len(content) > MAX_REQUEST_CONTENT:
            raise SubjectError(f"the content is over {MAX_REQUEST_CONTENT} characters")
        if (
            checked_kind == "training-plan"
            and hashlib.sha256(content.encode()).hexdigest() != digest
        ):
            raise SubjectError(f"the plan's text does not have the sha256 {digest}")
        now = _now()
        self.database.execute(
            f"INSERT INTO approval_requests ({_REQUEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
            " ON CONFLICT (kind, sha256) DO UPDATE SET content = excluded.content,"
            " summary = excluded.summary, last_asked_at = excluded.last_asked_at,"
            " asked_by = excluded.asked_by,"
            " times_asked = approval_requests.times_asked + 1",
            (checked_kind, digest, content, json.dumps(summary, sort_keys=True), now, now, by),
        )
        asked = self.request(checked_kind, digest)
        assert asked is not None  # just written
        return asked

    def request(self, kind: str, sha256: str) -> Request | None:
        """The request for this content, or None when it was never asked for."""
        checked_kind, digest = _checked(kind, sha256)
        rows = self.database.query(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE kind = ? AND sha256 = ?",
            (checked_kind, digest),
        )
        return _request(rows[0]) if rows else None

    def requests(self, kind: str) -> list[Request]:
        """Every request of one kind, the most recently asked first."""
        if kind not in KINDS:
            raise SubjectError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        rows = self.database.query(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE kind = ?"
            " ORDER BY last_asked_at DESC, sha256",
            (kind,),
        )
        return [_request(row) for row in rows]


def _request(row: Any) -> Request:
    kind, sha256, content, summary, first, last, by, times = row
    return Request(kind, sha256, content, json.loads(summary), first, last, by, int(times))
