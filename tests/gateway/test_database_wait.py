"""A gateway whose PostgreSQL is not there yet at start (compose, Kubernetes: a node restart,
a failover): it waits for it (``database_wait_seconds``), one log line per attempt with the
reason; what waiting cannot fix fails at once, clearly, with a non-zero exit.

Real processes over real sockets: the gateway (``python -m fedgate gateway``) and a real
PostgreSQL server started some seconds after it, on the port the gateway was given.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from dicomweb_client.api import DICOMwebClient

from tests.gateway.conftest import phantom
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.process import run_fedgate

# The database comes this long after the gateway started.
DATABASE_LATE_SECONDS = 4.0


def _log_lines(text: str) -> list[dict[str, Any]]:
    """The structured (JSON) lines of a gateway's output."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def _settings(url: str, wait_seconds: float) -> dict[str, Any]:
    return {
        "index": {"url": url},
        "queue": {"url": url},
        "database_wait_seconds": wait_seconds,
    }


def test_the_gateway_waits_for_a_database_that_comes_later_then_stores(tmp_path: Path) -> None:
    postgres = PostgresServer(port=free_port())
    gateway = GatewayProcess(tmp_path / "gateway", _settings(postgres.url, 60))
    gateway.port = free_port()
    before_database: list[str] = []

    def database_comes_late() -> None:
        time.sleep(DATABASE_LATE_SECONDS)
        # What a load balancer sees while the gateway waits: not ready.
        try:
            status = str(httpx.get(gateway.url + "/readyz", timeout=2).status_code)
        except httpx.TransportError as error:
            status = type(error).__name__
        before_database.append(status)
        postgres.start()

    late = threading.Thread(target=database_comes_late)
    started = time.monotonic()
    late.start()
    try:
        gateway.start(timeout=60)
        late.join()
        assert before_database and before_database[0] != "200"
        assert time.monotonic() - started >= DATABASE_LATE_SECONDS
        ready = httpx.get(gateway.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        lines = _log_lines(gateway.log())
        waiting = [line for line in lines if line["event"] == "database.waiting"]
        assert waiting, gateway.log()
        assert {line["reason"] for line in waiting} == {"connection refused"}
        assert [line["attempt"] for line in waiting] == list(range(1, len(waiting) + 1))
        # The URL's host, port and database are named; a password never is.
        assert f"127.0.0.1:{postgres.port}/fedgate" in waiting[0]["server"]
        reached = [line for line in lines if line["event"] == "database.reached"]
        assert len(reached) == 1 and reached[0]["attempt"] == len(waiting) + 1
        # A STOW is stored, and indexed in that PostgreSQL database.
        series = list(phantom(seed=700, slices=2).instances())
        response = DICOMwebClient(gateway.dicomweb_url).store_instances(series)
        assert {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence} == {
            dataset.SOPInstanceUID for dataset in series
        }
        with psycopg.connect(postgres.url) as connection:
            studies = connection.execute("SELECT COUNT(*) FROM studies").fetchone()
        assert studies == (1,)
    finally:
        late.join()
        gateway.stop()
        postgres.stop()


@pytest.fixture(scope="module")
def password_server() -> Iterator[PostgresServer]:
    server = PostgresServer(password="the-right-one").start()
    try:
        yield server
    finally:
        server.stop()


def _run_gateway(tmp_path: Path, settings: dict[str, Any]) -> tuple[int, str, float]:
    """Run the gateway until it exits: its status, its output, and how long it ran."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data_dir": str(tmp_path / "data"), "listen": {"port": free_port()}, **settings}
        )
    )
    started = time.monotonic()
    result = run_fedgate("gateway", "--config", str(config), timeout=120)
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


@pytest.mark.parametrize(
    ("password", "database", "reason"),
    [
        ("a-wrong-one", "fedgate", "authentication failed"),
        (None, "no_such_database", "the database does not exist"),
    ],
)
def test_what_waiting_cannot_fix_fails_at_once(
    tmp_path: Path,
    password_server: PostgresServer,
    password: str | None,
    database: str,
    reason: str,
) -> None:
    url = password_server.url_for(database, password)
    status, output, seconds = _run_gateway(tmp_path, _settings(url, 60))
    assert status == 2, output
    assert seconds < 20  # well under the 60 s wait: the interpreter's start and one attempt
    assert "Traceback" not in output
    [unusable] = [line for line in _log_lines(output) if line["event"] == "database.unusable"]
    assert unusable["reason"] == reason
    assert "index.url" in unusable["message"]
    assert not [line for line in _log_lines(output) if line["event"] == "database.waiting"]
    # Neither password shows in what the gateway wrote.
    assert "a-wrong-one" not in output and "the-right-one" not in output
    assert f"fedgate gateway: index.url, queue.url: {reason}" in output


def test_a_database_that_never_comes_fails_after_the_wait(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    status, output, seconds = _run_gateway(
        tmp_path, _settings(f"postgresql://fedgate@127.0.0.1:{closed}/fedgate", 3)
    )
    assert status == 1, output
    assert 3 <= seconds < 20
    assert "Traceback" not in output
    lines = _log_lines(output)
    waiting = [line for line in lines if line["event"] == "database.waiting"]
    assert len(waiting) >= 2 and {line["reason"] for line in waiting} == {"connection refused"}
    [expired] = [line for line in lines if line["event"] == "database.wait_expired"]
    assert expired["reason"] == "connection refused"
    assert expired["waited_seconds"] >= 3
    assert "after 3 s" in output


def test_fedgate_index_does_not_wait_and_says_why(
    tmp_path: Path, password_server: PostgresServer
) -> None:
    """A command that opens the index once fails at once, in words, without a traceback."""
    closed = f"postgresql://fedgate@127.0.0.1:{free_port()}/fedgate"
    wrong = password_server.url_for("fedgate", "a-wrong-one")
    for url, status, reason in ((closed, 1, "connection refused"), (wrong, 2, "authentication")):
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump({"data_dir": str(tmp_path / "data"), **_settings(url, 60)})
        )
        started = time.monotonic()
        result = run_fedgate("index", "show", "--config", str(config), timeout=60)
        assert time.monotonic() - started < 20
        assert result.returncode == status, result.stderr
        assert result.stderr.startswith("fedgate index: index.url (fedgate@127.0.0.1:")
        assert reason in result.stderr
        assert "Traceback" not in result.stderr and "a-wrong-one" not in result.stderr
