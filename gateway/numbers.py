"""Integers from requests, within what the databases hold.

SQLite and PostgreSQL store integers as signed 64-bit values: binding ``2**63`` raises
(``OverflowError`` in sqlite3, ``NumericValueOutOfRange`` in psycopg), which would answer 500.
Every integer taken from a URL or query string goes through here first.
"""

from __future__ import annotations

#: The largest integer SQLite's INTEGER and PostgreSQL's BIGINT hold.
DATABASE_INTEGER_MAX = 2**63 - 1


def non_negative_integer(text: str) -> int | None:
    """``text`` as a non-negative integer in ASCII digits (``"²"`` is a digit to
    ``str.isdigit`` but not to ``int``), or None. Not capped: see :func:`clamp_to_database`."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def clamp_to_database(value: int) -> int:
    """An offset or count the database can bind. Clamping keeps the answer right: no table
    has 2**63 rows, so an offset past the maximum gives the same empty page as the maximum."""
    return min(value, DATABASE_INTEGER_MAX)
