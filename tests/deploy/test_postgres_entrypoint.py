"""deploy/container/postgres-entrypoint.sh (the image's "postgres" target) with Debian's
PostgreSQL 15, run as the postgres user as in the image: the first start makes the database
and the password user from the secret file, and a gateway keeps its queue and index in it with
the URL make-secrets.sh writes (host changed to this machine)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.deploy.conftest import DEPLOY, read_env_file
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port
from tests.support.process import spawn, terminate
from tests.support.requirements import missing, require_file

ENTRYPOINT = DEPLOY / "container" / "postgres-entrypoint.sh"


@pytest.fixture
def entrypoint_server(deploy_with_secrets: Path) -> Iterator[tuple[int, str]]:
    """The entrypoint serving on a free port; yields (port, password)."""
    require_file("/usr/lib/postgresql/15/bin/postgres", "PostgreSQL 15 (Debian package postgresql)")
    if os.geteuid() != 0:
        missing("the entrypoint runs as the postgres user: the test must start as root")
    owner = pwd.getpwnam("postgres")
    # Its own folder: the server runs as postgres and pytest's temporary folders are root's.
    workdir = Path(tempfile.mkdtemp(prefix="fedgate-entrypoint-"))
    password_file = workdir / "password"
    shutil.copy(deploy_with_secrets / "compose" / "secrets" / "postgres-password", password_file)
    for path in (workdir, password_file):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    environment = {
        "PATH": "/usr/bin:/bin",
        "PGDATA": str(workdir / "data"),
        "PGPORT": str(port),  # the server's default port
        "POSTGRES_PASSWORD_FILE": str(password_file),
    }
    process = spawn(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "env",
            *(f"{k}={v}" for k, v in environment.items()),
            str(ENTRYPOINT),
        ],
        workdir / "entrypoint.log",
    )
    try:
        password = password_file.read_text()
        url = f"postgresql://fedgate:{password}@127.0.0.1:{port}/fedgate"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (workdir / "entrypoint.log").read_text()
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, (workdir / "entrypoint.log").read_text()
                time.sleep(0.3)
        yield port, password
    finally:
        terminate(process)
        shutil.rmtree(workdir, ignore_errors=True)


def test_first_start_makes_the_user_and_database_with_the_secret_password(
    entrypoint_server: tuple[int, str], tmp_path: Path, deploy_with_secrets: Path
) -> None:
    port, password = entrypoint_server
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://fedgate:wrong@127.0.0.1:{port}/fedgate", connect_timeout=10)
    url = f"postgresql://fedgate:{password}@127.0.0.1:{port}/fedgate"
    with psycopg.connect(url, connect_timeout=10) as connection:
        assert connection.execute("SELECT current_user, current_database()").fetchone() == (
            "fedgate",
            "fedgate",
        )

    # The gateway on it, with compose's URLs (postgres:5432 is this server here).
    gateway_env = read_env_file(deploy_with_secrets / "compose" / "secrets" / "gateway.env")
    queue_url = gateway_env["FEDGATE_QUEUE__URL"].replace("@postgres:5432/", f"@127.0.0.1:{port}/")
    index_url = gateway_env["FEDGATE_INDEX__URL"].replace("@postgres:5432/", f"@127.0.0.1:{port}/")
    gateway = GatewayProcess(
        tmp_path / "gateway", {"queue": {"url": queue_url}, "index": {"url": index_url}}
    )
    gateway.start()
    try:
        with psycopg.connect(url, connect_timeout=10) as connection:
            components = {
                row[0] for row in connection.execute("SELECT component FROM fedgate_schema")
            }
        assert {"queue", "index"} <= components, components
    finally:
        gateway.stop()
