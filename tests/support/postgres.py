"""A real PostgreSQL server (Debian package) in a temporary folder on a loopback port.

PostgreSQL refuses to run as root; as root (CI containers) the server runs as the package's
``postgres`` user, in a folder of its own outside pytest's private temporary tree. The one
helper for every PostgreSQL test: a fresh cluster per instance (its isolation), a database of
the test's choosing, on a free port or a chosen one (a gateway started before its database),
trusting loopback or asking a password (SCRAM, as a hospital's server does).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from tests.support.ports import free_port
from tests.support.requirements import missing

#: The superuser initdb creates; the URLs below connect as it.
USER = "fedgate"


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not candidates:
        missing("PostgreSQL server binaries not found (Debian package postgresql)")
    return Path(candidates[-1]).parent


class PostgresServer:
    """``initdb`` + ``postgres`` as the ``postgres`` user when we are root (it refuses root).

    ``database``: created at start unless it is ``postgres`` (initdb's own). ``port``: 0 for a
    free one, or a port chosen beforehand. ``password``: None trusts every loopback connection;
    a string makes the server ask it (scram-sha-256) of ``fedgate``.
    """

    def __init__(self, database: str = "fedgate", port: int = 0, password: str | None = None):
        # Its own folder: pytest's temporary folders are private to root, and the server
        # runs as the postgres user.
        self.workdir = Path(tempfile.mkdtemp(prefix="fedgate-postgres-"))
        self.database = database
        self.port = port
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str, password: str | None = None) -> str:
        """The URL of ``database`` on this server (with ``password``, else the server's)."""
        secret = password if password is not None else self.password
        credentials = USER if secret is None else f"{USER}:{quote(secret, safe='')}"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        return ["runuser", "-u", "postgres", "--", *command]

    def start(self) -> PostgresServer:
        bindir = _bindir()
        data = self.workdir / "pgdata"
        sockets = self.workdir / "sockets"
        sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                missing("running as root and there is no 'postgres' user to run PostgreSQL as")
            for path in (self.workdir, sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        authentication = ["--auth=trust"]
        if self.password is not None:
            password_file = self.workdir / "password"
            password_file.write_text(self.password)
            if os.geteuid() == 0:
                os.chown(password_file, owner.pw_uid, owner.pw_gid)
            authentication = ["--auth=scram-sha-256", f"--pwfile={password_file}"]
        # A server stopped by halt() starts again on its cluster (and port): a restart.
        initialised = (data / "PG_VERSION").exists()
        if not initialised:
            subprocess.run(
                self._as_owner(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        USER,
                        *authentication,
                        "--no-sync",
                        "-E",
                        "UTF8",
                    ]
                ),
                check=True,
                capture_output=True,
                timeout=60,
            )
        if not self.port:
            self.port = free_port()
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            self._as_owner(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(sockets),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=50",
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    self.url_for("postgres"), autocommit=True, connect_timeout=2
                ) as connection:
                    if self.database != "postgres" and not initialised:
                        connection.execute(f'CREATE DATABASE "{self.database}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    log_text = (self.workdir / "postgres.log").read_text(errors="replace")
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start:\n{log_text[-2000:]}") from None
                time.sleep(0.2)
        return self

    def halt(self) -> None:
        """Stop the server (a fast shutdown: its sessions are ended) and keep its cluster:
        :meth:`start` brings it back on the same port, as ``pg_ctl restart`` would."""
        if self.process is not None and self.process.poll() is None:
            # SIGINT to the postmaster itself is a fast shutdown (sessions are ended, the
            # cluster is left clean); runuser, our child, would turn a SIGTERM into a smart
            # one, which waits for every client, then kill it, leaving its lock file behind.
            pid_file = self.workdir / "pgdata" / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=20)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` of every other session (an administrator's or a
        failover tool's doing); returns how many were ended."""
        import psycopg

        with psycopg.connect(self.url_for("postgres"), autocommit=True) as connection:
            ended = connection.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchone()
        return int(ended[0]) if ended else 0

    def kill_backends(self) -> int:
        """``kill -9`` of every client session's process: a crashed backend, whose clients
        see "server closed the connection unexpectedly" (the server restarts its sessions
        and recovers; this returns once it answers again). Returns how many were killed."""
        import psycopg

        with psycopg.connect(self.url_for("postgres"), autocommit=True) as connection:
            pids = [
                int(row[0])
                for row in connection.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            ]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        # Until the postmaster has reaped them (a killed backend stays in /proc until then), it
        # has not begun its restart of every session yet and may still accept a connection
        # that the restart then ends ("the database system is starting up" just after).
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL did not reap its killed backends {pids}")
            time.sleep(0.05)
        while True:
            try:
                psycopg.connect(self.url_for("postgres"), connect_timeout=2).close()
                return len(pids)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.workdir, ignore_errors=True)
