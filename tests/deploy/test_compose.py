"""deploy/compose: valid for docker compose, and every service's settings accepted by the service
that reads them (so that the compose file cannot rot silently when a setting changes)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.settings import load_settings as load_gateway_settings
from hub.app import HubSettings
from inference_service.settings import load_settings as load_inference_settings
from tests.deploy.conftest import (
    EnvironmentSetter,
    image_env,
    read_env_file,
    relocate,
)
from tests.support.requirements import missing, require_executable

SITE_SERVICES = {
    "postgres",
    "orthanc",
    "gateway",
    "inference",
    "inference-research",
    "ohif",
    "prometheus",
}
FEDERATION_SERVICES = {"site-b", "hub"}


def compose_command() -> list[str]:
    """The docker CLI's compose plugin, or Debian's docker-compose (1.29; package docker-compose)
    as scripts/setup.sh installs it."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    missing("neither `docker compose` nor docker-compose (Debian package docker-compose)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def rendered(deploy_with_secrets: Path) -> dict[str, Any]:
    """`docker compose --profile federation config`: the file as compose understands it."""
    folder = deploy_with_secrets / "compose"
    done = subprocess.run(
        [*compose_command(), "-f", "compose.yaml", "--profile", "federation", "config"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_compose_accepts_the_file_and_the_federation_is_a_profile(
    rendered: dict[str, Any],
) -> None:
    """`up` starts the site; `--profile federation up` adds the hub and site-b. (Compose v1's
    `config` lists profiled services too, so the profiles themselves are checked.)"""
    services = rendered["services"]
    assert set(services) == SITE_SERVICES | FEDERATION_SERVICES
    assert {name for name in services if not services[name].get("profiles")} == SITE_SERVICES
    for name in FEDERATION_SERVICES:
        assert services[name]["profiles"] == ["federation"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            # A site service that waited for a profiled one would never start without it.
            assert name in FEDERATION_SERVICES or dependency in SITE_SERVICES, (name, dependency)


def test_every_service_has_a_read_only_root_and_no_inline_secret(
    rendered: dict[str, Any],
) -> None:
    for name, service in rendered["services"].items():
        assert service.get("read_only") is True, name
        assert "/tmp" in str(service.get("tmpfs")), name
        assert service.get("cap_drop") == ["ALL"], name
    # What compose.yaml itself says (`config` folds the env_files in): secrets are files
    # (..._FILE, compose secrets) or env_file entries, never values in the file.
    source = (Path(__file__).parents[2] / "deploy/compose/compose.yaml").read_text()
    for name, service in yaml.safe_load(source)["services"].items():
        for variable in service.get("environment") or {}:
            secret_like = re.search(r"TOKEN|PASSWORD|SALT|SECRET", variable)
            assert not secret_like or variable.endswith("_FILE"), (name, variable)
    assert not re.search(r"token_sha256|Bearer [A-Za-z0-9]", source)


def test_secret_files_are_readable_by_the_services_users_and_hidden_by_their_folder(
    deploy_with_secrets: Path, rendered: dict[str, Any]
) -> None:
    """Compose mounts a file secret as it is on the host (no uid/mode without swarm) and the
    services run as non-root users: each must be able to read it; nobody else may reach the
    folder."""
    folder = deploy_with_secrets / "compose" / "secrets"
    assert folder.stat().st_mode & 0o777 == 0o700
    for name, secret in rendered["secrets"].items():
        mode = Path(secret["file"]).stat().st_mode
        assert mode & 0o004, f"secret {name}: {oct(mode & 0o777)}, unreadable in the container"
    for env_file in folder.glob("*.env"):
        assert env_file.stat().st_mode & 0o077 == 0, env_file.name


def _mounts(service: dict[str, Any], folder: Path, secrets: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host file, for the service's bind mounts and secrets."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source"), volume["target"]
            kind = volume.get("type")
        else:
            source, target = volume.split(":")[:2]
            kind = "bind" if source.startswith((".", "/")) else "volume"
        if kind == "bind":
            mounts[target] = (folder / source).resolve()
    for secret in service.get("secrets", []):
        name = secret if isinstance(secret, str) else secret["source"]
        mounts[f"/run/secrets/{name}"] = Path(secrets[name]["file"])
    return mounts


def _environment(service: dict[str, Any], folder: Path) -> dict[str, str]:
    """The service's environment: `config` folds env_files into `environment` (compose v1), or
    keeps them apart (v2)."""
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(entry.split("=", 1) for entry in declared)
    variables: dict[str, str] = {key: str(value) for key, value in declared.items()}
    for entry in service.get("env_file", []):
        path = entry if isinstance(entry, str) else entry["path"]
        variables.update(read_env_file(folder / path))
    return variables


def _config_path(service: dict[str, Any]) -> str:
    command = service["command"]
    return str(command[command.index("--config") + 1])


def _gateway_settings(
    name: str,
    rendered: dict[str, Any],
    folder: Path,
    environment: EnvironmentSetter,
    tmp_path: Path,
) -> Any:
    service = rendered["services"][name]
    mounts = _mounts(service, folder, rendered["secrets"])
    config = tmp_path / f"{name}.yaml"
    config.write_text(relocate(mounts[_config_path(service)].read_text(), mounts))
    variables = {**image_env("gateway"), **_environment(service, folder)}
    variables.pop("FEDGATE_DATA_DIR")  # a volume in the container; irrelevant to the settings
    environment.set({key: relocate(value, mounts) for key, value in variables.items()})
    return load_gateway_settings(config)


def _service_address(url: str, rendered: dict[str, Any]) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname in rendered["services"], f"{url}: no such compose service"
    return parts.hostname, parts.port or 80


def test_the_gateways_accept_their_settings_and_reach_the_other_services(
    deploy_with_secrets: Path,
    rendered: dict[str, Any],
    container_environment: EnvironmentSetter,
    tmp_path: Path,
) -> None:
    folder = deploy_with_secrets / "compose"
    site = _gateway_settings("gateway", rendered, folder, container_environment, tmp_path)
    assert site.auth.enabled  # else the gateway would listen on loopback only
    assert site.listen.host == "0.0.0.0"
    # The inference service fetches the series from the gateway at its own URL.
    assert site.listen.public_url
    assert _service_address(site.listen.public_url, rendered) == ("gateway", site.listen.port)
    assert site.queue.url and site.index.url
    host, port = _service_address(site.queue.url.replace("postgresql", "http", 1), rendered)
    assert (host, port) == ("postgres", 5432)
    assert site.pacs.url and site.pacs.auth and site.pacs.auth.type == "basic"
    assert _service_address(site.pacs.url, rendered) == ("orthanc", 8042)
    assert [hub.name for hub in site.auth.hubs] == ["fedgate-hub"]

    inference_service = rendered["services"]["inference"]
    inference_mounts = _mounts(inference_service, folder, rendered["secrets"])
    container_environment.set(image_env("inference"))
    inference = load_inference_settings(inference_mounts[_config_path(inference_service)])
    for rule in site.routing:
        assert _service_address(rule.inference_url, rendered) == (
            "inference",
            inference.listen.port,
        )
    assert inference.listen.host == "0.0.0.0"

    # Federated analyses' models are installed into, and run on, the research inference
    # service: the gateway holds the token whose hash that service accepts; the service serves
    # a repository of its own (a volume) at the lowest CPU weight.
    research_service = rendered["services"]["inference-research"]
    assert site.pipeline.research.inference_url is not None
    assert _service_address(site.pipeline.research.inference_url, rendered) == (
        "inference-research",
        inference.listen.port,
    )
    container_environment.set({**image_env("inference"), **_environment(research_service, folder)})
    research = load_inference_settings(
        _mounts(research_service, folder, rendered["secrets"])[_config_path(research_service)]
    )
    assert site.pipeline.research.install_token is not None
    install_token = site.pipeline.research.install_token.get_secret_value()
    assert research.admin_token_sha256 == hashlib.sha256(install_token.encode()).hexdigest()
    assert inference.admin_token_sha256 is None  # the clinical repository is the image's
    assert str(research.models_dir) == "/var/lib/fedgate"
    volumes = [
        v if isinstance(v, dict) else {"source": v.split(":")[0], "target": v.split(":")[1]}
        for v in research_service["volumes"]
    ]
    assert any(
        v["target"] == "/var/lib/fedgate" and not str(v.get("source", "")).startswith((".", "/"))
        for v in volumes
    ), volumes
    assert int(research_service["cpu_shares"]) < int(
        rendered["services"]["inference"].get("cpu_shares", 1024)
    )

    site_b = _gateway_settings("site-b", rendered, folder, container_environment, tmp_path)
    assert site_b.auth.enabled and site_b.queue.url is None  # the embedded default


def test_the_tokens_people_and_services_hold_open_what_their_role_needs(
    deploy_with_secrets: Path,
    rendered: dict[str, Any],
    container_environment: EnvironmentSetter,
    tmp_path: Path,
) -> None:
    """Orthanc's token is a forwarder at the gateway; OHIF's is a viewer; the hub's reaches both
    sites with the hub role; Orthanc's login for the gateway is the gateway's pacs password."""
    folder = deploy_with_secrets / "compose"
    site = _gateway_settings("gateway", rendered, folder, container_environment, tmp_path)

    def roles_of(token: str, clients: Any) -> set[str]:
        digest = hashlib.sha256(token.encode()).hexdigest()
        return {
            role for client in clients if client.token_sha256 == digest for role in client.roles
        }

    # The inference service reads the series and stores its results with the callback token,
    # which the gateway requires to be an admin credential (gateway/pipeline/settings.py).
    assert site.pipeline.callback_token is not None
    assert roles_of(site.pipeline.callback_token.get_secret_value(), site.auth.clients) == {"admin"}
    metrics_token = (folder / "secrets" / "metrics-token").read_text()
    assert roles_of(metrics_token, site.auth.clients) == {"metrics"}
    orthanc_env = read_env_file(folder / "secrets" / "orthanc.env")
    assert roles_of(orthanc_env["FEDGATE_FORWARDER_TOKEN"], site.auth.clients) == {"forwarder"}
    viewer_token = (folder / "secrets" / "viewer-token").read_text()
    assert roles_of(viewer_token, site.auth.clients) == {"viewer"}
    assert site.pacs.auth is not None and site.pacs.auth.type == "basic"
    orthanc = json.loads((folder / "orthanc.json").read_text())
    registered = orthanc["RegisteredUsers"][site.pacs.auth.username]
    variable = re.fullmatch(r"\$\{(\w+)\}", registered)
    assert variable and orthanc_env[variable.group(1)] == site.pacs.auth.password.get_secret_value()
    forward = orthanc["DicomWeb"]["Servers"]["fedgate"]
    assert forward["HttpHeaders"]["Authorization"] == "Bearer ${FEDGATE_FORWARDER_TOKEN}"
    assert _service_address(forward["Url"], rendered) == ("gateway", site.listen.port)

    hub_service = rendered["services"]["hub"]
    mounts = _mounts(hub_service, folder, rendered["secrets"])
    hub_yaml = tmp_path / "hub.yaml"
    hub_yaml.write_text(relocate(mounts[_config_path(hub_service)].read_text(), mounts))
    hub = HubSettings.load(hub_yaml)
    assert hub.signing_key() is not None
    site_b = _gateway_settings("site-b", rendered, folder, container_environment, tmp_path)
    by_name = {"gateway": site, "site-b": site_b}
    for remote in hub.sites:
        service, _ = _service_address(remote.url, rendered)
        assert remote.token is not None
        assert roles_of(remote.token.get_secret_value(), by_name[service].auth.clients) == {
            "hub",
            "query",
        }
        assert [trusted.audience for trusted in by_name[service].auth.hubs] == [remote.name]


def test_prometheus_config_and_alert_rules_pass_promtool(
    deploy_with_secrets: Path, rendered: dict[str, Any], tmp_path: Path
) -> None:
    """Prometheus's config as the container sees it (its mounts), checked by promtool, and its
    scrape targets are the compose services on the ports they listen on."""
    promtool = require_executable("promtool")
    service = rendered["services"]["prometheus"]
    mounts = _mounts(service, deploy_with_secrets / "compose", rendered["secrets"])
    config = tmp_path / "prometheus.yml"
    config.write_text(relocate(mounts["/etc/prometheus/prometheus.yml"].read_text(), mounts))
    (tmp_path / "alerts.yaml").write_text(mounts["/etc/prometheus/alerts.yaml"].read_text())
    done = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rules found" in done.stdout or "rules found" in done.stdout
    targets = {
        target
        for job in yaml.safe_load(config.read_text())["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {"gateway:8080", "inference:8081", "inference-research:8081"}
