"""deploy/kubernetes: every overlay renders (kubectl kustomize), validates against the Kubernetes
API schemas (kubernetes-validate, offline), and holds settings the services accept; the research
inference service installs a model for the gateway's token only (a real process)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from gateway.analysis.bundle import ModelBundle
from gateway.analysis.install import install_bundle, installable_tar, installed_name
from gateway.settings import GatewaySettings
from gateway.settings import load_settings as load_gateway_settings
from hub.app import HubSettings
from inference_service.settings import load_settings as load_inference_settings
from tests.deploy.conftest import EnvironmentSetter, image_env, relocate
from tests.support.inference import InferenceProcess
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
        "fedgate-inference-research",
        "fedgate-hub",
        "postgres",
    }
    for each in workloads:
        pod = each["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0  # the image's numeric USER
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{each['metadata']['name']}/{container['name']}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["requests"] and container["resources"]["limits"], where
        for container in pod["containers"]:
            where = f"{each['metadata']['name']}/{container['name']}"
            assert container["readinessProbe"] and container["livenessProbe"], where
            mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert "/tmp" in mounted, f"{where}: no writable /tmp"


def test_research_inference_never_outweighs_clinical_inference_for_cpu(
    overlay: list[dict[str, Any]],
) -> None:
    """The kubelet makes a pod's CPU request its cgroup's CPU weight: the research service's
    must be a small fraction of the clinical one's, and no CPU limit may cap the clinical one."""

    def cpu(quantity: str) -> float:
        return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)

    def resources(name: str) -> dict[str, Any]:
        container = workload(overlay, name)["spec"]["template"]["spec"]["containers"][0]
        resources: dict[str, Any] = container["resources"]
        return resources

    clinical, research = resources("fedgate-inference"), resources("fedgate-inference-research")
    assert cpu(research["requests"]["cpu"]) * 10 <= cpu(clinical["requests"]["cpu"])
    assert "cpu" not in clinical["limits"]
    # Installs land in one repository (one volume): one pod serves them.
    assert workload(overlay, "fedgate-inference-research")["spec"]["replicas"] == 1


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
        for container in pod.get("initContainers", []):
            for mount in container["volumeMounts"]:
                assert mount["name"] in {volume["name"] for volume in pod["volumes"]}, mount


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
    # Research stays on the CPU (its image, its settings, no GPU, no GPU node) as on single-site.
    research = workload(resources, "fedgate-inference-research")["spec"]["template"]["spec"]
    assert research == workload(cpu, "fedgate-inference-research")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in research["containers"][0]["resources"]["limits"]
    assert research["containers"][0]["image"].endswith("/fedgate-inference:0.1.0")
    research_config = named(resources, "ConfigMap", "fedgate-inference-research-config")
    research_settings = yaml.safe_load(research_config["data"]["inference.yaml"])
    assert research_settings["onnxruntime"]["providers"] == ["CPUExecutionProvider"]


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


def _container_environment(
    resources: list[dict[str, Any]], container: dict[str, Any], target: str
) -> dict[str, str]:
    """The variables a container starts with: its image's ENV, then ``env``, then its Secrets'
    (``envFrom``), as the kubelet sets them."""
    variables = image_env(target)
    variables.update({each["name"]: each["value"] for each in container.get("env", [])})
    for source in container.get("envFrom", []):
        secret = named(resources, "Secret", source["secretRef"]["name"])
        variables.update(
            {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
        )
    return variables


def _gateway_settings(
    resources: list[dict[str, Any]], environment: EnvironmentSetter, folder: Path
) -> tuple[GatewaySettings, dict[str, Path]]:
    """The gateway's settings as a replica loads them, and its mounted files."""
    gateway = workload(resources, "fedgate-gateway")["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    mounts = _mounted_files(resources, container, gateway, folder)
    config = folder / "gateway.yaml"
    config.write_text(relocate(mounts["/etc/fedgate/gateway.yaml"].read_text(), mounts))
    variables = _container_environment(resources, container, "gateway")
    variables.pop("FEDGATE_DATA_DIR")
    environment.set(variables)
    return load_gateway_settings(config), mounts


def test_the_services_accept_their_settings_and_reach_each_other(
    overlay: list[dict[str, Any]], container_environment: EnvironmentSetter, tmp_path: Path
) -> None:
    site, mounts = _gateway_settings(overlay, container_environment, tmp_path)
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
    container_environment.set(
        _container_environment(overlay, inference_pod["containers"][0], "inference")
    )
    inference = load_inference_settings(inference_mounts["/etc/fedgate/inference.yaml"])
    # The clinical repository is the image's: no token installs there (research has its own).
    assert inference.admin_token_sha256 is None
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


def test_the_research_inference_service_installs_models_for_the_gateways_token_only(
    overlay: list[dict[str, Any]],
    container_environment: EnvironmentSetter,
    tmp_path: Path,
    models_dir: Path,
) -> None:
    """The gateway's research URL is the research Service; the hash at the research service is
    the gateway's install token's (as make-secrets.sh made them); its repository is on a
    PersistentVolumeClaim; and the service, started with its rendered settings, installs a model
    for that token, refuses a request without it (401) or with another (403), and serves the
    model again after a restart."""
    site, _ = _gateway_settings(overlay, container_environment, tmp_path / "gateway")
    assert site.pipeline.research.inference_url is not None
    assert site.pipeline.research.install_token is not None
    install_token = site.pipeline.research.install_token.get_secret_value()

    research = workload(overlay, "fedgate-inference-research")["spec"]["template"]["spec"]
    container = research["containers"][0]
    mounts = _mounted_files(overlay, container, research, tmp_path / "research")
    variables = _container_environment(overlay, container, "inference")
    container_environment.set(variables)
    settings = load_inference_settings(mounts["/etc/fedgate/inference.yaml"])
    assert _service_port(overlay, site.pipeline.research.inference_url) == (
        "fedgate-inference-research",
        settings.listen.port,
    )
    assert settings.admin_token_sha256 == hashlib.sha256(install_token.encode()).hexdigest()

    # models_dir is on a volume of a PersistentVolumeClaim of the overlay (installed models
    # survive the pod), in a folder of it that an init container makes.
    volumes = {volume["name"]: volume for volume in research["volumes"]}
    on_claim = [
        mount
        for mount in container["volumeMounts"]
        if "persistentVolumeClaim" in volumes[mount["name"]]
        and settings.models_dir.is_relative_to(mount["mountPath"])
    ]
    assert len(on_claim) == 1, container["volumeMounts"]
    claim = volumes[on_claim[0]["name"]]["persistentVolumeClaim"]["claimName"]
    assert named(overlay, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]

    # The volume as a freshly formatted ext4 file system gives it: lost+found only.
    volume = tmp_path / "volume"
    (volume / "lost+found").mkdir(parents=True)
    on_volume = {on_claim[0]["mountPath"]: volume}
    for init in research.get("initContainers", []):
        done = subprocess.run(
            [relocate(part, on_volume) for part in init["command"]],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
    repository = Path(relocate(str(settings.models_dir), on_volume))
    assert repository.is_dir(), f"{settings.models_dir}: no init container makes it"

    # The container's variables (the node's loopback for its address), the rendered config.
    container_environment.set(
        {
            **variables,
            "FEDGATE_INFERENCE_MODELS_DIR": str(repository),
            "FEDGATE_INFERENCE_LISTEN__HOST": "127.0.0.1",
        }
    )
    rendered = yaml.safe_load(mounts["/etc/fedgate/inference.yaml"].read_text())
    service = InferenceProcess(tmp_path / "process", repository, rendered).start()
    try:
        bundle = ModelBundle.read(models_dir / "nodule-presence")
        name = installed_name(bundle)
        url = f"{service.url}/v2/repository/models/{name}"
        body = installable_tar(bundle, name)
        tar = {"Content-Type": "application/x-tar"}
        without = httpx.put(url, content=body, headers=tar, timeout=60)
        assert without.status_code == 401, without.text
        other = httpx.put(
            url, content=body, headers={**tar, "Authorization": "Bearer not-the-token"}, timeout=60
        )
        assert other.status_code == 403, other.text

        async def install() -> str:
            async with httpx.AsyncClient(timeout=60) as http:
                return await install_bundle(http, service.url, install_token, bundle)

        assert asyncio.run(install()) == name  # the gateway's own install, with its token
        service.stop()
        service.start()  # the pod restarted: the volume keeps the model
        served = httpx.get(f"{service.url}/v1/models", timeout=10).json()["models"]
        assert [model["name"] for model in served] == [name]
    finally:
        service.stop()


def test_rotating_the_research_install_token_changes_both_secrets_and_nothing_else(
    deploy_with_secrets: Path, tmp_path: Path
) -> None:
    """make-secrets.sh --rotate-research-token: a new token at the gateway, its hash at the
    research service; both generated Secrets get new names (their pods roll onto them); every
    other Secret, the index salt above all, stays as it was."""
    deploy = tmp_path / "deploy"
    shutil.copytree(deploy_with_secrets, deploy)

    def secrets() -> dict[str, dict[str, Any]]:
        return {
            each["metadata"]["name"]: each
            for each in objects(render(deploy, "single-site"), "Secret")
        }

    def install_token(secret: dict[str, Any]) -> str:
        return base64.b64decode(
            secret["data"]["FEDGATE_PIPELINE__RESEARCH__INSTALL_TOKEN"]
        ).decode()

    def research_hash(secret: dict[str, Any]) -> str:
        return base64.b64decode(secret["data"]["FEDGATE_INFERENCE_ADMIN_TOKEN_SHA256"]).decode()

    before = secrets()
    done = subprocess.run(
        [str(deploy / "kubernetes" / "make-secrets.sh"), "--rotate-research-token"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    after = secrets()

    def one(found: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any]:
        return named(list(found.values()), "Secret", prefix)

    old_gateway, new_gateway = one(before, "fedgate-gateway"), one(after, "fedgate-gateway")
    new_research = one(after, "fedgate-inference-research")
    assert install_token(new_gateway) != install_token(old_gateway)
    assert (
        research_hash(new_research)
        == hashlib.sha256(install_token(new_gateway).encode()).hexdigest()
    )
    old_research = one(before, "fedgate-inference-research")
    assert research_hash(old_research) != research_hash(new_research)
    # The gateway's other variables are as they were.
    rest = {k: v for k, v in old_gateway["data"].items() if "RESEARCH" not in k}
    assert {k: v for k, v in new_gateway["data"].items() if "RESEARCH" not in k} == rest
    changed = set(before) ^ set(after)
    assert changed == {
        old_gateway["metadata"]["name"],
        new_gateway["metadata"]["name"],
        old_research["metadata"]["name"],
        new_research["metadata"]["name"],
    }
