"""What the deploy tests share: a copy of deploy/ with generated secrets, the images' environment
(read from the Dockerfile), and loading a service's settings as its container would see them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.requirements import require_executable

REPOSITORY = Path(__file__).resolve().parents[2]
DEPLOY = REPOSITORY / "deploy"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"


@pytest.fixture(scope="session")
def deploy_with_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ copied to a temporary folder, with the secrets make-secrets.sh writes for the
    compose stack (compose/secrets) and the Kubernetes overlays (overlays/single-site/secrets),
    exactly as an administrator makes them."""
    require_executable("openssl")
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets"))
    for script in (copy / "compose" / "make-secrets.sh", copy / "kubernetes" / "make-secrets.sh"):
        done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"
    return copy


def image_env(target: str) -> dict[str, str]:
    """The ENV a Dockerfile target's containers start with (its stage and the stages it is
    built FROM), parsed by dockerfile-parse."""
    from tests.deploy.dockerfile import stages

    found = stages(DOCKERFILE)
    chain = []
    stage: str | None = target
    while stage in found:
        chain.append(found[stage])
        stage = found[stage].parent
    env: dict[str, str] = {}
    for each in reversed(chain):
        env.update(each.env)
    return env


@pytest.fixture
def container_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[EnvironmentSetter]:
    """Replaces this process's FEDGATE_* environment with a container's, for loading settings."""
    setter = EnvironmentSetter(monkeypatch)
    setter.set({})
    yield setter


class EnvironmentSetter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self._monkeypatch = monkeypatch

    def set(self, variables: Mapping[str, str]) -> None:
        """Exactly these FEDGATE_* variables (another container's are removed)."""
        for name in list(os.environ):
            if name.startswith("FEDGATE_"):
                self._monkeypatch.delenv(name)
        for name, value in variables.items():
            if name.startswith("FEDGATE_"):
                self._monkeypatch.setenv(name, value)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (compose's env_file, kustomize's env), comments and blanks skipped."""
    variables = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value
    return variables


def relocate(text: str, mounts: Mapping[str, Path]) -> str:
    """``text`` with every container path of ``mounts`` replaced by the host file behind it."""
    for inside, outside in sorted(mounts.items(), key=lambda item: -len(item[0])):
        text = text.replace(inside, str(outside))
    return text
