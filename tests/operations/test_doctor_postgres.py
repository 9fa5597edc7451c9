"""``fedgate doctor`` checks the PostgreSQL server(s) of ``index.url`` and ``queue.url``: a
server that does not answer and a password it refuses are problems, with the reason in words
and what to do; a reachable one is reported with its schema versions.

Real processes: ``fedgate doctor`` and a real PostgreSQL server asking a password (SCRAM).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.queue.database import Database as QueueDatabase
from gateway.queue.dialect import POSTGRESQL
from gateway.queue.migrations import available
from gateway.queue.settings import QueueSettings
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.process import run_fedgate

PASSWORD = "the-right-one"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    postgres = PostgresServer(password=PASSWORD).start()
    try:
        yield postgres
    finally:
        postgres.stop()


def _doctor(tmp_path: Path, index_url: str, queue_url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "index": {"url": index_url},
                "queue": {"url": queue_url},
            }
        )
    )
    return run_fedgate("doctor", "--config", str(config), timeout=120)


def _lines(output: str, status: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if line.startswith(f"{status} ") and " postgresql: " in line
    ]


def test_a_closed_port_and_a_wrong_password_are_problems_with_the_reason(
    server: PostgresServer, tmp_path: Path
) -> None:
    closed = f"postgresql://fedgate@127.0.0.1:{free_port()}/fedgate"
    wrong = server.url_for("fedgate", "a-wrong-one")
    result = _doctor(tmp_path, index_url=closed, queue_url=wrong)
    assert result.returncode == 1, result.stdout + result.stderr
    refused, refused_password = sorted(_lines(result.stdout, "problem"))
    assert refused.startswith("problem  postgresql: index.url (fedgate@127.0.0.1:")
    assert "connection refused" in refused and "start the server" in refused
    assert refused_password.startswith("problem  postgresql: queue.url (fedgate@127.0.0.1:")
    assert "authentication failed" in refused_password
    assert "its user, password and database" in refused_password
    assert "a-wrong-one" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "connecting to PostgreSQL" in result.stderr


def test_a_reachable_database_is_ok_with_its_schema_versions(
    server: PostgresServer, tmp_path: Path
) -> None:
    # The queue's tables as a gateway creates them; the index's not yet.
    QueueDatabase.open(QueueSettings(url=server.url), tmp_path).close()
    result = _doctor(tmp_path, index_url=server.url, queue_url=server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    [line] = _lines(result.stdout, "ok")
    assert line.startswith("ok       postgresql: index.url, queue.url (fedgate@127.0.0.1:")
    latest = available(POSTGRESQL)[-1].version
    assert f"schema: no index tables yet, queue {latest}" in line
    assert PASSWORD not in result.stdout
