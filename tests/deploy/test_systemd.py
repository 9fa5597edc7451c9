"""deploy/systemd: the units pass `systemd-analyze verify`, are hardened, and start fedgate with
arguments its command line accepts and settings files the services accept."""

from __future__ import annotations

import argparse
import configparser
import importlib
import shlex
import subprocess
from pathlib import Path

import pytest

from fedgate.cli import SUBCOMMANDS
from tests.deploy.conftest import DEPLOY
from tests.support.requirements import require_executable

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
FEDGATE = "/opt/fedgate/bin/fedgate"


def read_unit(path: Path) -> configparser.RawConfigParser:
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(path)
    return unit


def test_the_units_are_there() -> None:
    assert [unit.name for unit in UNITS] == [
        "fedgate-gateway.service",
        "fedgate-hub.service",
        "fedgate-inference-research.service",
        "fedgate-inference.service",
    ]


def test_the_research_inference_service_yields_the_cpu_and_keeps_its_models() -> None:
    """docs/analysis.md: research work on its own service at the lowest CPU priority."""
    service = read_unit(DEPLOY / "systemd" / "fedgate-inference-research.service")["Service"]
    assert service["Nice"] == "19" and service["CPUWeight"] == "1"
    argv = shlex.split(service["ExecStart"])
    assert argv[argv.index("--models") + 1] == f"/var/lib/{service['StateDirectory']}"


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    """verify checks every key and that ExecStart's program is executable: the units are copied
    with ExecStart pointing at a stub, since /opt/fedgate is not installed on the test machine."""
    analyze = require_executable("systemd-analyze")
    stub = tmp_path / "fedgate"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(FEDGATE, str(stub)))
        copies.append(str(copy))
    done = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Unknown keys and bad values are only warnings: any output is a finding.
    assert done.stdout + done.stderr == ""


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.stem)
def test_units_are_hardened_and_restart(path: Path) -> None:
    service = read_unit(path)["Service"]
    assert service["User"] == "fedgate" and service["Group"] == "fedgate"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
        # 2 is a configuration error: restarting in a loop would not fix it.
        "RestartPreventExitStatus": "2",
    }.items():
        assert service.get(key) == value, f"{path.name}: {key}={service.get(key)!r}"
    state = service.get("StateDirectory")
    if state:
        assert service["ReadWritePaths"] == f"/var/lib/{state}"


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.stem)
def test_exec_start_is_a_command_line_fedgate_accepts(path: Path) -> None:
    argv = shlex.split(read_unit(path)["Service"]["ExecStart"])
    assert argv[0] == FEDGATE
    command = argv[1]
    parser = argparse.ArgumentParser(prog="fedgate")
    sub = parser.add_subparsers(dest="command")
    module_name, _ = SUBCOMMANDS[command]
    importlib.import_module(module_name).add_arguments(sub.add_parser(command))
    args = parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown option
    # fedgate-inference-research.service reads inference-research.yaml.
    assert args.config == Path(f"/etc/fedgate/{path.stem.removeprefix('fedgate-')}.yaml")


def test_sysusers_creates_the_units_user_and_group(tmp_path: Path) -> None:
    """systemd-sysusers, given deploy/systemd/fedgate.sysusers.conf, makes the User=/Group= of
    every unit (into a copy of /etc, through --root)."""
    sysusers = require_executable("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group"):
        (tmp_path / "etc" / name).write_text(Path(f"/etc/{name}").read_text())
    done = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(DEPLOY / "systemd" / "fedgate.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").open()}
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").open()}
    for unit in UNITS:
        service = read_unit(unit)["Service"]
        assert service["User"] in users and service["Group"] in groups
    assert users["fedgate"][6].strip() == "/usr/sbin/nologin"
