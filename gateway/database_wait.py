"""Waiting at start-up for the PostgreSQL server(s) of the queue and the index.

In compose and Kubernetes the database may come up after the gateway (a node restart, a
PostgreSQL failover): the gateway then retries connecting for ``database_wait_seconds``,
one log line per attempt with the reason, instead of dying at its first refused connection.
What retrying cannot fix (a wrong password, a database that does not exist, a URL libpq
cannot parse) ends the start at once, with the reason and the setting to look at.

libpq reports connection failures as text only (psycopg gives no SQLSTATE for them): the
reasons below are recognised in the messages of PostgreSQL's server (``FATAL: ...``, as in
its source: auth.c, postinit.c) and of libpq (fe-connect.c), in English, their default.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# (pattern, reason) for failures no retry can fix: the configuration must change.
_PERMANENT: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"password authentication failed|authentication failed", re.I),
        "authentication failed",
    ),
    (
        re.compile(r"no password supplied|password is required|fe_sendauth", re.I),
        "authentication failed",
    ),
    (re.compile(r"no pg_hba\.conf entry", re.I), "not allowed by the server's pg_hba.conf"),
    (re.compile(r'role ".*" does not exist', re.I), "the user does not exist"),
    (re.compile(r'database ".*" does not exist', re.I), "the database does not exist"),
    (
        re.compile(
            r"invalid port number|invalid URI|invalid connection option|missing \"=\"|"
            r"invalid integer value|invalid sslmode",
            re.I,
        ),
        "bad URL",
    ),
)
# (pattern, reason) for the usual transient ones, named briefly; anything else is retried too,
# with libpq's own words as the reason.
_TRANSIENT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"connection refused", re.I), "connection refused"),
    (
        re.compile(r"starting up|shutting down|in recovery mode|not yet accepting", re.I),
        "the database server is starting or stopping",
    ),
    (re.compile(r"too many clients|connection slots", re.I), "the server has no free connection"),
    (re.compile(r"timeout expired|timed out", re.I), "no answer (timeout)"),
    (re.compile(r"resolve host|translate host name", re.I), "host name not found"),
    (re.compile(r"no route to host|network is unreachable", re.I), "network unreachable"),
)


@dataclass(frozen=True)
class Failure:
    """Why a connection failed, and whether trying again could help."""

    reason: str
    permanent: bool
    detail: str


def classify(error: Exception) -> Failure:
    """The reason of a failed ``psycopg.connect``: permanent (the configuration must change)
    or transient (the server is not there yet)."""
    detail = " ".join(str(error).split())  # libpq's text spans lines, with tabs
    for pattern, reason in _PERMANENT:
        if pattern.search(detail):
            return Failure(reason, True, detail)
    if type(error).__name__ == "ProgrammingError":  # psycopg's for a URL it cannot parse
        return Failure("bad URL", True, detail)
    for pattern, reason in _TRANSIENT:
        if pattern.search(detail):
            return Failure(reason, False, detail)
    return Failure(
        detail.removeprefix("connection failed: ") or type(error).__name__, False, detail
    )


def connection_failure(error: BaseException) -> Failure | None:
    """:func:`classify` for psycopg's errors (a command that opens a database once says why
    it could not); None for any other error."""
    if not type(error).__module__.startswith("psycopg") or not isinstance(error, Exception):
        return None
    return classify(error)


def describe(url: str) -> str:
    """``user@host:port/database`` of a PostgreSQL URL: what a log may show (no password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:
        return "(unparsable URL)"
    return (
        f"{parts.get('user', '')}@{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
        f"/{parts.get('dbname', '')}"
    )


class DatabaseUnavailable(Exception):
    """The gateway cannot start on its database; ``exit_status`` is the process's."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


#: First pause between attempts; it doubles up to the cap, within the wait.
FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 5.0
#: libpq's connect_timeout per attempt (whole seconds; at most the time left).
ATTEMPT_TIMEOUT_SECONDS = 5


def wait_for_databases(databases: dict[str, str], wait_seconds: float) -> None:
    """Return once every database in ``databases`` (setting name -> URL) accepts a
    connection; raise :class:`DatabaseUnavailable` at the first permanent failure (exit
    status 2, a configuration error as for bad settings) or when ``wait_seconds`` have passed
    (exit status 1: a supervisor's restart may find the database there)."""
    import psycopg  # only when PostgreSQL is configured

    deadline = time.monotonic() + wait_seconds
    # One wait per server: the queue and the index often share one URL.
    by_url: dict[str, list[str]] = {}
    for setting, url in databases.items():
        by_url.setdefault(url, []).append(setting)
    for url, settings in by_url.items():
        _wait_for(url, ", ".join(settings), deadline, wait_seconds, psycopg.connect)


def _wait_for(
    url: str, names: str, deadline: float, wait_seconds: float, connect: Callable[..., Any]
) -> None:
    """Try ``url`` until it answers, a permanent failure, or ``deadline``."""
    server = describe(url)
    # Every line names the setting and the server (never the password), and the attempt.
    attempts = log.bind(setting=names, server=server)
    started = deadline - wait_seconds  # the gateway's wait, for all of its databases
    attempt = 0
    pause = FIRST_PAUSE_SECONDS
    while True:
        attempt += 1
        left = deadline - time.monotonic()
        try:
            timeout = max(1, min(ATTEMPT_TIMEOUT_SECONDS, int(left + 0.999)))
            connect(url, connect_timeout=timeout).close()
        except Exception as error:
            failure = classify(error)
            said = attempts.bind(
                attempt=attempt,
                reason=failure.reason,
                detail=failure.detail,
                waited_seconds=round(time.monotonic() - started, 1),
            )
            if failure.permanent:
                said.error(
                    "database.unusable",
                    message=f"{failure.reason} ({server}): retrying cannot fix this; "
                    f"check {names} (the URL, its user, password and database)",
                )
                raise DatabaseUnavailable(
                    f"{names}: {failure.reason} ({server}): {failure.detail}", 2
                ) from None
            left = deadline - time.monotonic()
            if left <= 0:
                said.error(
                    "database.wait_expired",
                    message=f"no database at {server} after {wait_seconds:g} s "
                    f"(database_wait_seconds): {failure.reason}",
                )
                raise DatabaseUnavailable(
                    f"{names}: no database at {server} after {wait_seconds:g} s: {failure.reason}",
                    1,
                ) from None
            pause = min(pause, left)
            said.warning(
                "database.waiting", retry_in_seconds=round(pause, 1), wait_seconds=wait_seconds
            )
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)
            continue
        if attempt > 1:
            attempts.info(
                "database.reached",
                attempt=attempt,
                waited_seconds=round(time.monotonic() - started, 1),
            )
        return


# --- After the start: a connection that drops while the gateway runs -------------------------


class DatabaseDisconnected(Exception):
    """The PostgreSQL connection dropped (a restart, a failover, ``pg_terminate_backend``)
    during a transaction: it was rolled back, nothing of it was written. Transient: the next
    use opens a new connection, so the caller retries (a job later, a request with 503)."""


def connection_lost(connection: Any, error: BaseException) -> bool:
    """Whether ``error`` means that ``connection`` is gone and a new one is needed.

    psycopg marks a connection ``broken`` when the server went away under it (its socket
    closed, ``FATAL: terminating connection due to administrator command``) and ``closed``
    once closed; an error of a query on a live connection (a constraint, a syntax error)
    leaves it usable, and is not retried. sqlite3 connections have neither: never lost.
    """
    if not type(error).__module__.startswith("psycopg"):
        return False
    return bool(getattr(connection, "broken", False) or getattr(connection, "closed", False))


def probe(url: str, timeout_seconds: int = 2) -> Failure | None:
    """One ``SELECT 1`` on a new connection to ``url``: None when it answers, else why not
    (:func:`classify`'s reason). For /readyz and ``fedgate doctor``; never raises."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout_seconds) as connection:
            connection.execute("SELECT 1").fetchone()
    except Exception as error:
        return classify(error)
    return None


def reconnect(connect: Callable[[], Any], setting: str) -> Any:
    """``connect()``, for a connection that dropped; :class:`DatabaseDisconnected` with the
    reason in words while the database is still away (the caller's next use tries again)."""
    try:
        return connect()
    except Exception as error:
        failure = classify(error)
        raise DatabaseDisconnected(
            f"{setting}: PostgreSQL does not answer ({failure.reason})"
        ) from error
