"""Settings: YAML plus FEDGATE_* environment; a bad key stops the command and is named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import ConfigError, load_settings
from tests.support.gateway import REPO_ROOT


def run_gateway(
    config: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedgate", "gateway", "--config", str(config)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("yaml_text", "named_key"),
    [
        ("listen: {port: 99999}\n", "listen.port"),
        ("listen: {port: eighty}\n", "listen.port"),
        ("pacs: {url: 'ftp://pacs/dicom-web'}\n", "pacs"),
        ("ingest: {duplicates: sometimes}\n", "ingest.duplicates"),
        ("lissen: {port: 8080}\n", "lissen"),
        ("pacs: {auth: {type: basic, username: u}}\n", "pacs.auth.basic.password"),
        ("ingest: {patient_mismatch: merge}\n", "ingest.patient_mismatch"),
        (
            "dimse: {allowed_calling_ae_titles: [{ae_title: CT, host: ct.local}]}\n",
            "dimse.allowed_calling_ae_titles.0",
        ),
        ("http: {cors_origins: ['https://viewer.example/ohif']}\n", "http.cors_origins"),
        ("http: {cors_origins: ['*']}\n", "http.cors_origins"),
    ],
)
def test_invalid_config_exits_non_zero_naming_the_key(
    tmp_path: Path, yaml_text: str, named_key: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml_text)
    result = run_gateway(config)
    assert result.returncode == 2
    assert named_key in result.stderr


def test_unreadable_yaml_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("listen: [unclosed\n")
    result = run_gateway(config)
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: {port: 8080}\npacs: {url: 'http://pacs:8042/dicom-web', timeout_seconds: 7}\n"
    )
    monkeypatch.setenv("FEDGATE_LISTEN__PORT", "9090")
    monkeypatch.setenv("FEDGATE_PACS__URL", "http://other:8042/dicom-web/")
    settings = load_settings(config)
    assert settings.listen.port == 9090
    assert settings.pacs.url == "http://other:8042/dicom-web"
    assert settings.pacs.timeout_seconds == 7  # nested keys not overridden are kept


def test_bad_environment_value_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDGATE_INGEST__MAX_INSTANCE_BYTES", "-5")
    with pytest.raises(ConfigError, match=r"ingest\.max_instance_bytes"):
        load_settings(None)
