"""A real gateway process (``python -m fedgate gateway``) on a free loopback port."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_port, wait_for_http
from tests.support.process import kill, spawn, terminate

REPO_ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """Writes ``settings`` (merged over listen/data_dir) to YAML and runs the gateway on it.

    With ``listen.tls`` in ``settings`` the gateway serves HTTPS: ``verify`` is then the
    client's SSL context (tests/support/tls.py) the start-up check connects with."""

    def __init__(
        self,
        workdir: Path,
        settings: dict[str, Any] | None = None,
        host: str = "127.0.0.1",
        verify: ssl.SSLContext | None = None,
    ):
        self.workdir = workdir
        self.settings = dict(settings or {})
        self.host = host
        self.verify = verify
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.get("listen", {}).get("tls") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicomweb"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.get("data_dir", self.workdir / "data"))

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        settings = {
            "data_dir": str(self.workdir / "data"),
            **self.settings,
            "listen": {**self.settings.get("listen", {}), "host": self.host, "port": self.port},
        }
        config_path = self.workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(settings))
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = spawn(
            [sys.executable, "-m", "fedgate", "gateway", "--config", str(config_path)],
            self.log_path,
            cwd=REPO_ROOT,
            env=env,
        )
        try:
            wait_for_http(
                f"{self.url}/healthz",
                timeout=timeout,
                process=self.process,
                verify=self.verify or True,
            )
        except Exception as error:
            self.stop()
            raise RuntimeError(f"gateway did not start ({error}); log:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """``kill -9``: no chance to clean up, as in a crash."""
        kill(self.process)
        self.process = None

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
