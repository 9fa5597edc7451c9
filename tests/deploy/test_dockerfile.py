"""deploy/container/Dockerfile, checked by parsing it (dockerfile-parse): hadolint is not a Debian
12 package and is not downloaded as a binary, so the rules that matter are asserted here."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

import pytest

from tests.deploy.conftest import DOCKERFILE, REPOSITORY
from tests.deploy.dockerfile import global_args, stages

#: The images people run, and what each must declare.
FINAL_TARGETS = ("gateway", "inference", "hub", "orthanc", "postgres", "ohif", "prometheus")


def test_every_stage_starts_from_the_debian_base_or_an_earlier_stage() -> None:
    """No image is pulled: FROM names the base that build-base.sh makes, or a stage above."""
    arguments = global_args(DOCKERFILE)
    assert arguments["BASE_IMAGE"] == "localhost/fedgate-base:bookworm"
    seen: list[str] = []
    for name, stage in stages(DOCKERFILE).items():
        assert stage.parent == "${BASE_IMAGE}" or stage.parent in seen, (name, stage.parent)
        assert "latest" not in stage.parent
        seen.append(name)
    assert set(FINAL_TARGETS) <= set(seen)


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_images_run_as_a_user_other_than_root(target: str) -> None:
    found = stages(DOCKERFILE)
    users: list[str] = []
    stage = found[target]
    while True:
        users = stage.all("USER") + users
        if stage.parent not in found:
            break
        stage = found[stage.parent]
    assert users, f"{target} runs as root: no USER"
    # Numeric uid:gid, so that Kubernetes' runAsNonRoot can tell it is not root.
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and group.isdigit(), f"{target}: USER {users[-1]}"
    assert int(user) != 0, f"{target} runs as root"


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_images_check_their_health_without_curl(target: str) -> None:
    healthchecks = stages(DOCKERFILE)[target].all("HEALTHCHECK")
    assert len(healthchecks) == 1, f"{target}: {healthchecks}"
    command = healthchecks[0].split("CMD", 1)[1].strip()
    argv = json.loads(command)  # exec form: no shell needed in the image
    assert argv[0] in ("python3", "/usr/lib/postgresql/15/bin/pg_isready"), argv
    assert "curl" not in command and "wget" not in command


def test_no_add_of_urls_and_apt_lists_cleaned() -> None:
    for name, stage in stages(DOCKERFILE).items():
        for added in stage.all("ADD"):
            assert not re.search(r"https?://", added), f"{name}: ADD of a URL: {added}"
        for command in stage.all("RUN"):
            if "apt-get install" in command:
                assert "--no-install-recommends" in command, f"{name}: {command}"
                assert "rm -rf /var/lib/apt/lists/*" in command, f"{name}: apt lists kept"


def test_copied_paths_exist_and_are_in_the_build_context() -> None:
    """Every COPY source is in the repository and not excluded by .dockerignore."""
    ignored = [
        line.strip()
        for line in (REPOSITORY / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name, stage in stages(DOCKERFILE).items():
        for copied in stage.all("COPY"):
            words = [word for word in copied.split() if not word.startswith("--")]
            if any(word.startswith("--from=") for word in copied.split()):
                continue
            for source in words[:-1]:
                path = source.rstrip("/")
                assert (REPOSITORY / path).exists(), f"{name}: COPY {source}: missing"
                for pattern in ignored:
                    assert not fnmatch.fnmatch(path, pattern), f"{name}: {source} is ignored"


def test_the_python_images_carry_the_bundled_models_built_at_build_time() -> None:
    build = stages(DOCKERFILE)["python-build"]
    assert any("fedgate models build --out /opt/fedgate/models" in run for run in build.all("RUN"))
    inference = stages(DOCKERFILE)["inference"]
    assert inference.env["FEDGATE_INFERENCE_MODELS_DIR"] == "/opt/fedgate/models"


def test_the_build_stage_copies_every_package_the_wheel_holds() -> None:
    """A package added to pyproject.toml but not copied would be missing from the images."""
    config = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    roots = {
        pattern.rstrip("*")
        for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        copy.split()[0].rstrip("/") for copy in stages(DOCKERFILE)["python-build"].all("COPY")
    }
    assert roots <= copied, f"not copied into the image: {sorted(roots - copied)}"
