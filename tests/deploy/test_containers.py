"""The compose site built and started for real (issue 18): the images built from
deploy/container/Dockerfile on the base image of build-base.sh (Debian packages and PyPI only,
no registry), deploy/compose/compose.yaml started by podman-compose with the secrets of
make-secrets.sh, and checked as a PACS administrator would: a CT sent to Orthanc's DICOM port
comes back analysed (the gateway's job succeeded, the SR and SEG are in Orthanc), OHIF's server
lists the study with the viewer token while the gateway refuses the same request without one,
Prometheus scrapes both services, the federation example's hub asks both sites, and every
container runs as a non-root user on a read-only root file system. Containers, networks and
volumes are removed afterwards, also on failure.

Cold (no build cache) this takes about 10 minutes on two shared cores, warm (every layer
cached) under 3; docs/deploy.md has the figures. Under CI=true a missing or broken container
engine fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedgate.phantom import Phantom
from tests.deploy.conftest import DEPLOY, DOCKERFILE, REPOSITORY
from tests.deploy.test_compose import FEDERATION_SERVICES, SITE_SERVICES
from tests.pipeline.conftest import chest_phantom
from tests.support.ports import free_port
from tests.support.requirements import missing, require_executable
from tests.support.waiting import wait_until

#: Cold: the base image, about 1.2 GB of wheels, npm's OHIF and four Debian package stages.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

BASE_IMAGE = "localhost/fedgate-base:bookworm"
#: The tag the test builds and starts (compose.yaml's FEDGATE_TAG): not a release's 0.1.0.
TAG = "test"
#: gateway first: inference and hub share all its Python layers (one dependency stage), then
#: the Debian package stages. site-b runs the gateway's image.
TARGETS = ("gateway", "inference", "hub", "postgres", "orthanc", "prometheus", "ohif")
#: The single site and the federation example (its hub and a second site).
SERVICES = SITE_SERVICES | FEDERATION_SERVICES
#: Debian's bundle, which holds a TLS-inspecting proxy's CA where a site adds one: handed to
#: pip and npm as a build secret (docs/deploy.md), never kept in an image.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def podman() -> str:
    """podman that can run a container here, or fail (CI) / skip (elsewhere)."""
    found = require_executable("podman")
    probe = subprocess.run([found, "info"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        missing(f"podman does not work here: {probe.stderr.strip()[-500:]}")
    return found


def run(command: Sequence[str], log: Path, timeout: float, **options: Any) -> float:
    """Run a command, its output appended to ``log``; its duration in seconds, or fail with
    the log's tail."""
    started = time.monotonic()
    with log.open("a") as output:
        output.write(f"\n$ {' '.join(command)}\n")
        output.flush()
        done = subprocess.run(
            command, stdout=output, stderr=subprocess.STDOUT, timeout=timeout, **options
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"{command[:3]} failed ({done.returncode}):\n{tail}")
    return time.monotonic() - started


def image(target: str) -> str:
    """The image compose.yaml names for a target, at the test's tag."""
    return f"localhost/fedgate-{target}:{TAG}"


def build_images(engine: str, log: Path) -> dict[str, float]:
    """The base image when absent (build-base.sh), then the site's targets, from the build
    cache where it holds them; seconds per step."""
    seconds: dict[str, float] = {}
    exists = subprocess.run([engine, "image", "exists", BASE_IMAGE], timeout=60)
    if exists.returncode != 0:
        require_executable("mmdebstrap")
        seconds["base"] = run([str(DEPLOY / "container" / "build-base.sh")], log, 900)
    options = ["--format", "docker", "--network", "host", "-f", str(DOCKERFILE)]
    if CA_BUNDLE.is_file():
        options += ["--secret", f"id=ca-bundle,src={CA_BUNDLE}"]
    for target in TARGETS:
        seconds[target] = run(
            [engine, "build", *options, "--target", target, "-t", image(target), str(REPOSITORY)],
            log,
            1800,
        )
    return seconds


@dataclass
class Stack:
    """The compose site of one test run: its project name, folder, ports and credentials."""

    engine: str
    compose: list[str]
    folder: Path
    project: str
    ports: dict[str, int]
    admin_token: str
    analyst_token: str
    orthanc_login: tuple[str, str]
    viewer_token: str
    log: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The label compose puts on the project's containers, networks and volumes."""
        return f"label=com.docker.compose.project={self.project}"

    @property
    def compose_command(self) -> list[str]:
        return [*self.compose, "-p", self.project, "-f", "compose.yaml"]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def containers(self) -> dict[str, str]:
        """Service name -> container name, by compose's project label."""
        listed = subprocess.run(
            [self.engine, "ps", "-a", "--format", "json", "--filter", self.label],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found = {}
        for container in json.loads(listed.stdout or "[]"):
            service = container["Labels"]["com.docker.compose.service"]
            found[service] = container["Names"][0]
        return found

    def restarts(self) -> dict[str, int]:
        """How often each container was restarted (restart: unless-stopped), for the record."""
        counts = {}
        for service, name in self.containers().items():
            inspected = subprocess.run(
                [self.engine, "inspect", "--format", "{{.RestartCount}}", name],
                capture_output=True,
                text=True,
                timeout=60,
            )
            counts[service] = int(inspected.stdout.strip() or 0)
        return counts

    def logs(self) -> str:
        """Every container's state and last log lines: what a failure message shows."""
        parts = []
        for service, name in sorted(self.containers().items()):
            state = subprocess.run(
                [self.engine, "inspect", "--format", "{{.State.Status}}", name],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.strip()
            logs = subprocess.run(
                [self.engine, "logs", "--tail", "30", name],
                capture_output=True,
                text=True,
                timeout=60,
            )
            parts.append(f"--- {service} ({state})\n{logs.stdout}{logs.stderr}")
        return "\n".join(parts)

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        try:
            return wait_until(predicate, timeout, what, step=1.0)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.logs()}") from None

    def down(self) -> None:
        """compose down with the volumes, then whatever still carries the project's label
        (podman-compose 1.0.3 leaves the network)."""
        subprocess.run(
            [*self.compose_command, "down", "-v"],
            cwd=self.folder,
            capture_output=True,
            timeout=300,
        )
        for kind, remove in (
            ("container", ["rm", "-f", "-v"]),
            ("volume", ["volume", "rm", "-f"]),
            ("network", ["network", "rm", "-f"]),
        ):
            listing = ["ps", "-a", "-q"] if kind == "container" else [kind, "ls", "-q"]
            left = subprocess.run(
                [self.engine, *listing, "--filter", self.label],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.split()
            if left:
                subprocess.run([self.engine, *remove, *left], capture_output=True, timeout=300)


def compose_folder(copy: Path, project: str, ports: dict[str, int]) -> dict[str, str]:
    """deploy/ copied with fresh secrets from make-secrets.sh and an .env naming this run's
    project, tag and host ports; the gateway's admin token and the hub's analyst token that
    make-secrets.sh prints (as an administrator reads them) and Orthanc's password."""
    require_executable("openssl")
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets"))
    made = subprocess.run(
        [str(copy / "compose" / "make-secrets.sh")], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    admin = re.search(r"gateway admin token \S+:\s+(\S+)", made.stdout)
    analyst = re.search(r"hub analyst token \S+:\s+(\S+)", made.stdout)
    assert admin and analyst, made.stdout
    variables = {
        "COMPOSE_PROJECT_NAME": project,
        "FEDGATE_TAG": TAG,
        "FEDGATE_GATEWAY_PORT": ports["gateway"],
        "FEDGATE_DICOM_PORT": ports["dicom"],
        "FEDGATE_ORTHANC_PORT": ports["orthanc"],
        "FEDGATE_OHIF_PORT": ports["ohif"],
        "FEDGATE_PROMETHEUS_PORT": ports["prometheus"],
        "FEDGATE_HUB_PORT": ports["hub"],
    }
    (copy / "compose" / ".env").write_text(
        "".join(f"{name}={value}\n" for name, value in variables.items())
    )
    orthanc_env = (copy / "compose" / "secrets" / "orthanc.env").read_text()
    password = re.search(r"^ORTHANC_FEDGATE_PASSWORD=(\S+)$", orthanc_env, re.MULTILINE)
    assert password
    return {"admin": admin[1], "analyst": analyst[1], "orthanc": password[1]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    engine = podman()
    compose = [require_executable("podman-compose")]
    work = tmp_path_factory.mktemp("containers")
    log = work / "build-and-start.log"
    project = f"fedgate-test-{os.getpid()}"
    ports = {
        name: free_port() for name in ("gateway", "dicom", "orthanc", "ohif", "prometheus", "hub")
    }
    tokens = compose_folder(work / "deploy", project, ports)
    folder = work / "deploy" / "compose"
    running = Stack(
        engine,
        compose,
        folder,
        project,
        ports,
        tokens["admin"],
        tokens["analyst"],
        ("fedgate", tokens["orthanc"]),
        (folder / "secrets" / "viewer-token").read_text(),
        log,
    )
    started = time.monotonic()
    running.seconds.update(build_images(engine, log))
    running.seconds["build"] = time.monotonic() - started
    try:
        up = time.monotonic()
        # The services named: podman-compose 1.0.3 ignores `profiles` (docker compose needs
        # --profile federation for site-b and the hub) and depends_on's conditions (restart:
        # unless-stopped restarts a gateway that started before PostgreSQL was ready).
        run(
            [*running.compose_command, "up", "-d", "--no-build", *sorted(SERVICES)],
            log,
            600,
            cwd=folder,
        )
        running.wait(lambda: _ready(running), 300, "every service of the site to answer")
        running.seconds["start"] = time.monotonic() - up
        yield running
    finally:
        try:
            restarts: dict[str, int] | str = running.restarts()
        except (subprocess.SubprocessError, ValueError, KeyError) as error:
            restarts = repr(error)  # the teardown below must run whatever this says
        running.down()
        print(f"\ncontainers: seconds per step {running.seconds}, restarts {restarts}; log {log}")


def _answers(url: str, **options: Any) -> bool:
    try:
        return httpx.get(url, timeout=5, **options).status_code == 200
    except httpx.HTTPError:
        return False


def _ready(stack: Stack) -> bool:
    return (
        _answers(stack.url("gateway") + "/readyz")
        and _answers(stack.url("orthanc") + "/system", auth=stack.orthanc_login)
        and _answers(stack.url("ohif") + "/")
        and _answers(stack.url("prometheus") + "/-/ready")
        and _answers(stack.url("hub") + "/healthz")
    )


def send_from_a_modality(port: int, phantom: Phantom, folder: Path) -> None:
    """DCMTK's storescu to Orthanc's published DICOM port, as a modality sends."""
    storescu = require_executable("storescu")
    paths = [str(path) for path in phantom.write(folder / phantom.truth.series_instance_uid)]
    subprocess.run(
        [storescu, "-aet", "CT-SCANNER", "-aec", "ORTHANC", "127.0.0.1", str(port), *paths],
        check=True,
        capture_output=True,
        timeout=120,
    )


def instances_in_orthanc(stack: Stack, study_uid: str, modality: str) -> list[str]:
    """QIDO-RS to Orthanc with the gateway's login: the SOP Instance UIDs of the study's
    instances of one modality."""
    found = httpx.get(
        f"{stack.url('orthanc')}/dicom-web/studies/{study_uid}/instances",
        params={"Modality": modality},
        auth=stack.orthanc_login,
        timeout=30,
    )
    assert found.status_code in (200, 204), found.text
    instances: list[dict[str, Any]] = found.json() if found.content else []
    return [instance["00080018"]["Value"][0] for instance in instances]


@pytest.fixture(scope="module")
def analysed_study(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Phantom:
    """A chest CT with a 20 mm nodule sent to Orthanc, analysed once its SR and SEG are there:
    Orthanc forwards it after its StableAge (60 s), the gateway queues the job at once."""
    phantom = chest_phantom(seed=1800, lesions=(20.0,))
    sent = time.monotonic()
    send_from_a_modality(stack.ports["dicom"], phantom, tmp_path_factory.mktemp("phantom"))
    uid = phantom.truth.study_instance_uid
    stack.wait(
        lambda: all(instances_in_orthanc(stack, uid, modality) for modality in ("SR", "SEG")),
        300,
        "the SR and SEG in Orthanc",
    )
    stack.seconds["analysed"] = time.monotonic() - sent
    return phantom


def test_a_ct_sent_to_orthanc_is_analysed_and_its_sr_and_seg_are_in_orthanc(
    stack: Stack, analysed_study: Phantom
) -> None:
    uid = analysed_study.truth.study_instance_uid
    jobs = httpx.get(
        stack.url("gateway") + "/jobs",
        params={"study": uid},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    )
    assert jobs.status_code == 200, jobs.text
    (job,) = jobs.json()["jobs"]
    assert (job["model"], job["state"]) == ("nodule-detector", "succeeded"), job
    # Exactly the results the job wrote, once: Orthanc did not forward them back to be analysed.
    assert instances_in_orthanc(stack, uid, "SR") == [job["sr_sop_instance_uid"]]
    assert instances_in_orthanc(stack, uid, "SEG") == [job["seg_sop_instance_uid"]]


def test_ohif_lists_the_study_with_the_viewer_token_and_the_gateway_refuses_without_one(
    stack: Stack, analysed_study: Phantom
) -> None:
    uid = analysed_study.truth.study_instance_uid
    query = {"StudyInstanceUID": uid}
    accept = {"Accept": "application/dicom+json"}
    listed = httpx.get(stack.url("ohif") + "/dicomweb/studies", params=query, headers=accept)
    assert listed.status_code == 200, listed.text
    assert [study["0020000D"]["Value"][0] for study in listed.json()] == [uid]
    # The same request to the gateway itself, without the token that OHIF's server adds.
    refused = httpx.get(stack.url("gateway") + "/dicomweb/studies", params=query, headers=accept)
    assert refused.status_code == 401, refused.text
    with_token = httpx.get(
        stack.url("gateway") + "/dicomweb/studies",
        params=query,
        headers={**accept, "Authorization": f"Bearer {stack.viewer_token}"},
    )
    assert with_token.status_code == 200, with_token.text
    assert [study["0020000D"]["Value"][0] for study in with_token.json()] == [uid]


def test_prometheus_scrapes_the_gateway_and_the_inference_services(stack: Stack) -> None:
    def targets() -> dict[str, str] | None:
        answer = httpx.get(stack.url("prometheus") + "/api/v1/targets", timeout=10).json()
        found = {t["labels"]["instance"]: t["health"] for t in answer["data"]["activeTargets"]}
        return found if "unknown" not in found.values() and len(found) == 3 else None

    # The research inference service up too: reached by its compose name on the site's network.
    health = stack.wait(targets, 120, "Prometheus's first scrape of the three services")
    assert health == {"gateway:8080": "up", "inference:8081": "up", "inference-research:8081": "up"}


def test_the_hub_asks_both_sites_for_the_analysts_budget(stack: Stack) -> None:
    """The federation example: the hub reaches both gateways by their compose names with its
    tokens, and each accepts the person the hub's signed assertion names (the hub's key from
    make-secrets.sh, trusted by both as the hub-public-key secret)."""
    answer = httpx.get(
        stack.url("hub") + "/federated/v1/budget",
        headers={"Authorization": f"Bearer {stack.analyst_token}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    budget = answer.json()
    statuses = {site["name"]: site["status"] for site in budget["sites"]}
    assert statuses == {"site-a": "ok", "site-b": "ok"}, budget
    assert budget["person"] == "analyst" and budget["complete"] is True


def test_every_container_runs_as_a_non_root_user_on_a_read_only_root(stack: Stack) -> None:
    containers = stack.containers()
    assert set(containers) == SERVICES
    for service, name in containers.items():
        inspected = json.loads(
            subprocess.run(
                [stack.engine, "inspect", name], capture_output=True, text=True, check=True
            ).stdout
        )[0]
        assert inspected["State"]["Status"] == "running", (service, inspected["State"])
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True, service
        # The main process's user as the host sees it (rootful: the same uids), as `ps` shows.
        status = Path(f"/proc/{inspected['State']['Pid']}/status").read_text()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.MULTILINE)
        assert uids and "0" not in uids.group(1).split(), (service, uids)
        probe = subprocess.run(
            [stack.engine, "exec", name, "touch", "/fedgate-write-probe"],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, (
            service,
            probe.stderr,
        )
