"""The few differences between SQLite and PostgreSQL that the queue's SQL has to know."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str
    id_column: str
    real: str
    #: Appended to the SELECT that claims due jobs: PostgreSQL lets replicas skip rows another
    #: replica has locked; SQLite has one writer at a time anyway (BEGIN IMMEDIATE).
    claim_suffix: str
    #: Appended to a SELECT of one row about to be updated.
    lock_suffix: str

    def sql(self, statement: str) -> str:
        """Write statements with ``?`` placeholders; PostgreSQL's driver wants ``%s``."""
        return statement.replace("?", "%s") if self.name == "postgresql" else statement

    @staticmethod
    def now() -> float:
        return time.time()


SQLITE = Dialect("sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", "", "")
POSTGRESQL = Dialect(
    "postgresql",
    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "DOUBLE PRECISION",
    " FOR UPDATE SKIP LOCKED",
    " FOR UPDATE",
)
