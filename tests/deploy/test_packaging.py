"""The installed fedgate (a wheel, as in the container images, not the editable install of the
development venv) carries every data file the code reads: package-data in pyproject.toml."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from tests.deploy.conftest import REPOSITORY


def included_by_package_data() -> set[Path]:
    """The files setuptools puts into the wheel besides modules: each package's folder globbed
    with the patterns of ``"*"`` and of the package's own name (setuptools' rule)."""
    config = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = config["packages"]["find"]["include"]
    patterns: dict[str, list[str]] = config["package-data"]
    included: set[Path] = set()
    for init in REPOSITORY.glob("**/__init__.py"):
        folder = init.parent
        package = ".".join(folder.relative_to(REPOSITORY).parts)
        if not any(Path(package.split(".")[0]).match(root) for root in roots):
            continue
        for pattern in patterns.get("*", []) + patterns.get(package, []):
            included.update(path.resolve() for path in folder.glob(pattern))
    return included


def test_every_tracked_data_file_of_the_packages_is_in_the_wheel() -> None:
    tracked = subprocess.run(
        [
            "git",
            "ls-files",
            "fedgate",
            "gateway",
            "hub",
            "inference_service",
            "sr_writer",
            "dashboard",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    data = {(REPOSITORY / name).resolve() for name in tracked if not name.endswith(".py")}
    assert data, "no data files found: is this a git checkout?"
    left_out = sorted(
        str(path.relative_to(REPOSITORY)) for path in data - included_by_package_data()
    )
    assert left_out == []
