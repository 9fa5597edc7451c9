"""A throwaway PostgreSQL cluster (Debian's postgresql package) on a free port.

PostgreSQL refuses to run as root; as root (CI containers) the cluster runs as the package's
``postgres`` user, in a folder of its own outside pytest's private temporary tree.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.ports import free_port
from tests.support.requirements import missing


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        missing(f"PostgreSQL's {name} not found (Debian package postgresql)")
    return found[-1]


class PostgresCluster:
    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="fedgate-pg-"))
        self.data = self.workdir / "data"
        self._prefix: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://fedgate@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._prefix, *command], check=True, capture_output=True, timeout=60)

    def start(self) -> PostgresCluster:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                missing("running as root and there is no 'postgres' user to run PostgreSQL as")
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self._run(initdb, "-D", str(self.data), "-U", "fedgate", "--auth=trust", "--no-sync")
        self._run(
            pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.workdir / "postgres.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)
