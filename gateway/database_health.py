"""Whether the gateway's PostgreSQL server(s) answer now: for ``/readyz`` and the STOW intake.

After the start (:mod:`gateway.database_wait`) the database may go away: a restart, a
failover, an upgrade. The gateway keeps running (a restart would not bring the database back:
``/healthz`` stays 200), but while the index's or the queue's database does not answer it is
not ready: an orchestrator sends traffic elsewhere, and a STOW is refused with 503 rather than
stored where the index and the queue would never learn of it.

A probe is one ``SELECT 1`` on a new connection with a short timeout, and its answer is kept
for :data:`MAX_AGE_SECONDS` so that frequent probes (every replica's load balancer, every STOW)
do not each open a connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.database_wait import Failure, describe, probe

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

#: How long an answer is reused.
MAX_AGE_SECONDS = 2.0
#: libpq's connect_timeout for a probe (its minimum is 2 s).
PROBE_TIMEOUT_SECONDS = 2


class DatabaseHealth:
    """The PostgreSQL URLs of the gateway's settings (setting name -> URL) and whether they
    answer; with none configured (SQLite) always healthy, and never probed."""

    def __init__(
        self,
        databases: dict[str, str],
        check: Callable[[str], Failure | None] = lambda url: probe(url, PROBE_TIMEOUT_SECONDS),
    ):
        # One probe per server: the queue and the index often share one URL.
        self._by_url: dict[str, list[str]] = {}
        for setting, url in databases.items():
            self._by_url.setdefault(url, []).append(setting)
        self._check = check
        self._lock = threading.Lock()
        self._checked_at = -float("inf")
        self._problem: str | None = None

    def problem(self) -> str | None:
        """None while every database answers, else which does not and why, in words (no
        password): ``index.url, queue.url (fedgate@db:5432/fedgate): connection refused``.
        Blocks up to the probe's timeout when the last answer is older than its max age."""
        if not self._by_url:
            return None
        with self._lock:  # concurrent callers share one probe
            if time.monotonic() - self._checked_at >= MAX_AGE_SECONDS:
                problems = []
                for url, settings in self._by_url.items():
                    failure = self._check(url)
                    if failure is not None:
                        problems.append(
                            f"{', '.join(settings)} ({describe(url)}): {failure.reason}"
                        )
                self._problem = "; ".join(problems) or None
                self._checked_at = time.monotonic()
            return self._problem


def configured_databases(settings: GatewaySettings) -> dict[str, str]:
    """The PostgreSQL URLs of ``settings`` by setting name (none for SQLite)."""
    return {
        name: url
        for name, url in (("index.url", settings.index.url), ("queue.url", settings.queue.url))
        if url is not None
    }
