"""deploy/kubernetes: every overlay renders (kubectl kustomize), validates against the Kubernetes
API schemas (kubernetes-validate, offline), and holds settings the services accept."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from gateway.settings import load_settings as load_gateway_settings
from hub.app import HubSettings
from inference_service.settings import load_settings as load_inference_settings
from tests.deploy.conftest import EnvironmentSetter, image_env, relocate
from tests.support.requirements import require_executable

OVERLAYS = ("single-site", "gpu")
#: The Kubernetes version the manifests are checked against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.30.0"


def render(deploy: Path, overlay: str) -> list[dict[str, Any]]:
    kubectl = require_executable("kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", str(deploy / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, deploy_with_secrets: Path) -> list[dict[str, Any]]:
    resources = render(deploy_with_secrets, request.param)
    resources.append({"overlay": request.param})  # for the tests' messages
    return resources


def objects(resources: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [each for each in resources if "kind" in each and kind in (None, each["kind"])]


def named(resources: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    """The one object of ``kind`` whose name is ``prefix`` (generated ones carry a hash suffix)."""

    def matches(name: str) -> bool:
        # kustomize appends "-" and a 10-character hash of the content.
        return name == prefix or (name.startswith(prefix + "-") and len(name) == len(prefix) + 11)

    found = [each for each in objects(resources, kind) if matches(each["metadata"]["name"])]
    assert len(found) == 1, (kind, prefix, [each["metadata"]["name"] for each in found])
    return found[0]


def workload(resources: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [
        each
        for each in objects(resources)
        if each["kind"] in ("Deployment", "StatefulSet") and each["metadata"]["name"] == name
    ]
    assert len(found) == 1, name
    return found[0]


def test_every_object_validates_strictly_against_the_kubernetes_schemas(
    overlay: list[dict[str, Any]],
) -> None:
    for each in objects(overlay):
        # Raises ValidationError (unknown field, wrong type) naming the object and the field.
        kubernetes_validate.validate(each, KUBERNETES_VERSION, strict=True)


def test_every_workload_is_probed_limited_and_unprivileged(overlay: list[dict[str, Any]]) -> None:
    workloads = [each for each in objects(overlay) if each["kind"] in ("Deployment", "StatefulSet")]
    assert {each["metadata"]["name"] for each in workloads} == {
        "fedgate-gateway",
        "fedgate-inference",
        "fedgate-hub",
        "postgres",
    }
    for each in workloads:
        pod = each["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0  # the image's numeric USER
        for container in pod["containers"]:
            where = f"{each['metadata']['name']}/{container['name']}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["readinessProbe"] and container["livenessProbe"], where
            assert container["resources"]["requests"] and container["resources"]["limits"], where
            mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert "/tmp" in mounted, f"{where}: no writable /tmp"


def test_gateway_replicas_share_postgresql_and_are_probed_on_healthz_and_readyz(
    overlay: list[dict[str, Any]],
) -> None:
    gateway = workload(overlay, "fedgate-gateway")
    assert gateway["kind"] == "StatefulSet" and gateway["spec"]["replicas"] >= 2
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # One spool volume per replica (the store's SQLite catalog must not be shared).
    claims = gateway["spec"]["volumeClaimTemplates"]
    assert [claim["spec"]["accessModes"] for claim in claims] == [["ReadWriteOnce"]]


def test_every_referenced_secret_and_config_map_is_in_the_overlay(
    overlay: list[dict[str, Any]],
) -> None:
    names = {(each["kind"], each["metadata"]["name"]) for each in objects(overlay)}
    for each in objects(overlay):
        if each["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = each["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names, volume
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names, volume
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names, volume
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert ("Secret", source["secretRef"]["name"]) in names, source


def test_the_gpu_overlay_puts_the_inference_service_on_a_gpu(deploy_with_secrets: Path) -> None:
    resources = render(deploy_with_secrets, "gpu")
    pod = workload(resources, "fedgate-inference")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["image"].endswith("fedgate-inference-gpu:0.1.0")
    config = named(resources, "ConfigMap", "fedgate-inference-config")
    settings = yaml.safe_load(config["data"]["inference.yaml"])
    assert settings["onnxruntime"]["providers"][0] == "CUDAExecutionProvider"
    # The CPU overlay is untouched.
    cpu = render(deploy_with_secrets, "single-site")
    limits = workload(cpu, "fedgate-inference")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in limits["resources"]["limits"]


def _secret_files(secret: dict[str, Any], folder: Path) -> dict[str, Path]:
    files = {}
    for key, value in secret["data"].items():
        path = folder / secret["metadata"]["name"] / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(value))
        files[key] = path
    return files


def _mounted_files(
    resources: list[dict[str, Any]], container: dict[str, Any], pod: dict[str, Any], folder: Path
) -> dict[str, Path]:
    """Container path -> a host file with the Secret's or ConfigMap's content."""
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume = volumes.get(mount["name"], {})
        if "secret" in volume:
            secret = named(resources, "Secret", volume["secret"]["secretName"])
            files = _secret_files(secret, folder)
        elif "configMap" in volume:
            config = named(resources, "ConfigMap", volume["configMap"]["name"])
            files = {}
            for key, value in config["data"].items():
                path = folder / config["metadata"]["name"] / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(value)
                files[key] = path
        else:
            continue
        if "subPath" in mount:
            mounts[mount["mountPath"]] = files[mount["subPath"]]
        else:
            for key, path in files.items():
                mounts[f"{mount['mountPath']}/{key}"] = path
    return mounts


def _service_port(resources: list[dict[str, Any]], url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    services = {each["metadata"]["name"]: each for each in objects(resources, "Service")}
    assert parts.hostname in services, f"{url}: no such Service"
    ports = [port["port"] for port in services[parts.hostname]["spec"]["ports"]]
    assert parts.port in ports, f"{url}: the Service has ports {ports}"
    return parts.hostname, parts.port


def test_the_services_accept_their_settings_and_reach_each_other(
    overlay: list[dict[str, Any]], container_environment: EnvironmentSetter, tmp_path: Path
) -> None:
    gateway = workload(overlay, "fedgate-gateway")["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    mounts = _mounted_files(overlay, container, gateway, tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(relocate(mounts["/etc/fedgate/gateway.yaml"].read_text(), mounts))
    variables = image_env("gateway")
    for source in container["envFrom"]:
        secret = named(overlay, "Secret", source["secretRef"]["name"])
        variables.update(
            {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
        )
    variables.pop("FEDGATE_DATA_DIR")
    container_environment.set(variables)
    site = load_gateway_settings(config)
    assert site.auth.enabled and site.listen.host == "0.0.0.0"
    # The inference service's token for reading series and storing results: an admin client.
    assert site.pipeline.callback_token is not None
    callback = hashlib.sha256(site.pipeline.callback_token.get_secret_value().encode()).hexdigest()
    assert [client.roles for client in site.auth.clients if client.token_sha256 == callback] == [
        ["admin"]
    ]
    assert site.queue.url and site.index.url
    assert _service_port(overlay, site.queue.url.replace("postgresql", "http", 1)) == (
        "postgres",
        5432,
    )
    assert site.listen.public_url
    assert _service_port(overlay, site.listen.public_url)[0] == "fedgate-gateway"
    # The salt every replica mounts is a valid index salt (64 hexadecimal digits).
    assert len(bytes.fromhex(mounts["/var/lib/fedgate/index-salt"].read_text())) == 32

    inference_pod = workload(overlay, "fedgate-inference")["spec"]["template"]["spec"]
    inference_mounts = _mounted_files(
        overlay, inference_pod["containers"][0], inference_pod, tmp_path / "inference"
    )
    container_environment.set(image_env("inference"))
    inference = load_inference_settings(inference_mounts["/etc/fedgate/inference.yaml"])
    for rule in site.routing:
        assert _service_port(overlay, rule.inference_url) == (
            "fedgate-inference",
            inference.listen.port,
        )

    hub_pod = workload(overlay, "fedgate-hub")["spec"]["template"]["spec"]
    hub_mounts = _mounted_files(overlay, hub_pod["containers"][0], hub_pod, tmp_path / "hub")
    hub_yaml = tmp_path / "hub.yaml"
    hub_yaml.write_text(relocate(hub_mounts["/etc/fedgate/hub.yaml"].read_text(), hub_mounts))
    hub = HubSettings.load(hub_yaml)
    assert hub.signing_key() is not None
    in_cluster = [each for each in hub.sites if each.url.startswith("http://fedgate-gateway:")]
    assert len(in_cluster) == 1
    assert [trusted.audience for trusted in site.auth.hubs] == [in_cluster[0].name]
