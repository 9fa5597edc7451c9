"""scripts/setup.d/50-containers.sh: podman's settings for the container test (docs/deploy.md),
written where absent and accepted by podman; an administrator's own files are left as they are."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.deploy.conftest import REPOSITORY
from tests.support.requirements import require_executable

HOOK = REPOSITORY / "scripts" / "setup.d" / "50-containers.sh"


def run_hook(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(HOOK)],
        env={**os.environ, "FEDGATE_CONTAINERS_CONF_DIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_the_settings_written_on_a_fresh_machine_are_what_podman_runs_with(tmp_path: Path) -> None:
    podman = require_executable("podman")
    run_hook(tmp_path)
    info = subprocess.run(
        [podman, "info", "--format", "json"],
        env={
            **os.environ,
            "CONTAINERS_CONF": str(tmp_path / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(tmp_path / "storage.conf"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert info.returncode == 0, info.stderr
    host = json.loads(info.stdout)["host"]
    store = json.loads(info.stdout)["store"]
    assert host["ociRuntime"]["name"] == "runc"
    assert host["cgroupManager"] == "cgroupfs"
    assert host["eventLogger"] == "file"
    assert host["networkBackend"] == "cni"  # the dnsname plugin resolves compose's names
    assert store["graphDriverName"] == "overlay"


def test_an_administrators_own_settings_are_not_overwritten(tmp_path: Path) -> None:
    own = '[engine]\nruntime = "crun"\n'
    (tmp_path / "containers.conf").write_text(own)
    written = run_hook(tmp_path)
    assert (tmp_path / "containers.conf").read_text() == own
    assert "storage.conf" in written.stdout and "containers.conf" not in written.stdout
    assert (tmp_path / "storage.conf").is_file()
    # Run again: nothing is written twice.
    assert run_hook(tmp_path).stdout == ""
