"""A real inference service process (``python -m fedgate inference``) on a free loopback port."""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_port, wait_for_http
from tests.support.process import spawn, terminate

REPO_ROOT = Path(__file__).resolve().parents[2]


def bundled_models(directory: Path) -> Path:
    """Build the bundled models into ``directory`` (once; reproducible) and return it."""
    if not (directory / "nodule-detector" / "model.onnx").is_file():
        subprocess.run(
            [sys.executable, "-m", "fedgate", "models", "build", "--out", str(directory)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            check=True,
            capture_output=True,
        )
    return directory


class InferenceProcess:
    """Writes ``settings`` (merged over listen/models_dir) to YAML and serves ``models_dir``.

    With ``listen.tls`` in ``settings`` the service serves HTTPS: ``verify`` is then the
    client's SSL context (tests/support/tls.py) the start-up check connects with."""

    def __init__(
        self,
        workdir: Path,
        models_dir: Path,
        settings: dict[str, Any] | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.workdir = workdir
        self.models_dir = models_dir
        self.settings = dict(settings or {})
        self.verify = verify
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.get("listen", {}).get("tls") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "inference.log"

    def command(self, config_path: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fedgate",
            "inference",
            "--models",
            str(self.models_dir),
            "--config",
            str(config_path),
        ]

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        settings = {
            "log": {"level": "info", "json": True},
            **self.settings,
            "listen": {**self.settings.get("listen", {}), "host": "127.0.0.1", "port": self.port},
        }
        config_path = self.workdir / "inference.yaml"
        config_path.write_text(yaml.safe_dump(settings))
        return config_path

    def start(self, timeout: float = 60.0) -> InferenceProcess:
        config_path = self.write_config()
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = spawn(self.command(config_path), self.log_path, cwd=REPO_ROOT, env=env)
        try:
            wait_for_http(
                f"{self.url}/v2/health/live",
                timeout=timeout,
                process=self.process,
                verify=self.verify or True,
            )
        except Exception as error:
            self.stop()
            raise RuntimeError(
                f"inference service did not start ({error}); log:\n{self.log()}"
            ) from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


#: The admin token of :func:`installing_inference` services in the tests.
INSTALL_TOKEN = "test-install-token"


def installing_inference(
    workdir: Path, models_dir: Path, token: str = INSTALL_TOKEN
) -> InferenceProcess:
    """An inference service (not started) that lets the holder of ``token`` install models,
    serving a copy of ``models_dir``: what it installs stays out of the shared repository."""
    repository = workdir / "models"
    shutil.copytree(models_dir, repository)
    return InferenceProcess(
        workdir, repository, {"admin_token_sha256": hashlib.sha256(token.encode()).hexdigest()}
    )
