"""The hub's side of ``fedgate learn run``: a SuperLink, one submitted run, its progress.

How Flower 1.42 runs an app whose code is installed: a run is a Flower App Bundle (FAB)
submitted over the SuperLink's Control API (what ``flwr run`` does); the SuperLink starts the
FAB's ServerApp (``flwr-serverapp``, ``--isolation subprocess``, the default) and each site's
ClientApp executor (:mod:`gateway.learning.executor`) runs the ClientApp for the messages its
SuperNode receives. Our FAB
(``hub/learning/flower_app``) carries no code, only the names of fedgate's installed modules
(``hub.learning.server:app``, ``gateway.learning.client:app``), and the SuperLink runs with
``--disable-runtime-dependency-installation``: nothing is installed or downloaded for a run.

One port serves the SuperLink's Fleet (SuperNodes), Control (this runner) and Runtime
(ServerApp) APIs over HTTP(S). The ServerApp's output, including its
``fedgate-progress {json}`` lines, comes back through the Control API's log stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hub.learning.server import PROGRESS_PREFIX
from hub.learning.settings import LearningSettings

__all__ = [
    "FLOWER_APP",
    "flower_environment",
    "follow_run",
    "online_supernodes",
    "start_superlink",
    "submit_run",
    "wait_for_superlink",
]

#: The FAB's folder (pyproject.toml only).
FLOWER_APP = Path(__file__).resolve().parent / "flower_app"


def flower_environment(state_dir: Path) -> dict[str, str]:
    """The environment of Flower's processes: its home in ``state_dir`` (the FAB is installed
    there), this Python's scripts first on PATH (the SuperLink and SuperNode start
    ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    scripts = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "FLWR_HOME": str(state_dir.resolve() / "flwr"),
        "PATH": scripts + os.pathsep + os.environ.get("PATH", ""),
        # The SuperLink's SuperExec looks for a run to start every second by default: the
        # ServerApp of a submitted run starts up to 1 s late. Every 0.1 s cost the SuperLink
        # 6 % of a core for as long as it ran, a run included (measured with its state in a
        # file: 6 ms of its CPU per poll); every 0.25 s costs 40 % of that.
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25",
        # Nothing leaves a site or the hub but the federation's own messages: no usage events
        # to Flower's telemetry service (each process would also wait up to 4 s for it at
        # exit), no update check against PyPI.
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }


def start_superlink(settings: LearningSettings, log_path: Path) -> subprocess.Popen[bytes]:
    """A ``flower-superlink`` process (its own process group), output to ``log_path``."""
    executable = shutil.which("flower-superlink", path=str(Path(sys.executable).parent))
    if executable is None:
        raise RuntimeError("flower-superlink is not installed next to this Python (flwr)")
    command = [
        executable,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--database",
        # Flower's own name for a state kept in memory (settings.superlink_state).
        ":flwr-in-memory:"
        if settings.superlink_state_in_memory
        else str(settings.state_dir.resolve() / "superlink.db"),
        "--disable-runtime-dependency-installation",
    ]
    if settings.tls is None:
        command.append("--insecure")
    else:
        command += [
            "--ssl-certfile",
            str(settings.tls.certfile),
            "--ssl-keyfile",
            str(settings.tls.keyfile),
            "--ssl-ca-certfile",
            str(settings.tls.ca_certfile),
        ]
    if settings.supernode_auth:
        command.append("--enable-supernode-auth")
    environment = flower_environment(settings.state_dir)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
    )


def wait_for_superlink(address: str, timeout: float = 30.0, *, tls: bool = False) -> None:
    """Until the SuperLink's HTTP port answers (any status), or RuntimeError."""
    deadline = time.monotonic() + timeout
    url = f"{'https' if tls else 'http'}://{address}/"
    while True:
        try:
            httpx.get(url, timeout=1.0, verify=False)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no SuperLink answers at {address}") from None
            time.sleep(0.2)


@dataclass(frozen=True)
class Submitted:
    run_id: int
    address: str
    root_certificates: Path | None


def _control_client(address: str, root_certificates: Path | None) -> Any:
    from flwr.cli.typing import SuperLinkConnection
    from flwr.cli.utils import init_http_client_from_connection

    connection = SuperLinkConnection(
        name="fedgate",
        address=address,
        insecure=root_certificates is None,
        root_certificates=None if root_certificates is None else str(root_certificates),
    )
    return init_http_client_from_connection(connection)


def submit_run(
    address: str,
    plan_text: str,
    out: Path,
    timeout: float,
    root_certificates: Path | None = None,
) -> Submitted:
    """Submit our FAB with the plan to the SuperLink's Control API; returns the run."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.supercore.fab import Fab

    fab_bytes = build_fab_from_disk(FLOWER_APP)
    fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
    run_config: dict[str, bool | float | int | str] = {
        "plan": plan_text,
        "out": str(out.resolve()),
        "timeout": float(timeout),
    }
    client = _control_client(address, root_certificates)
    try:
        response = client.StartRun(
            StartRunRequest(
                fab=fab_to_proto(fab),
                override_config=user_config_to_proto(run_config),
                federation="",
            )
        )
    finally:
        client.close()
    if not response.HasField("run_id"):
        raise RuntimeError(f"the SuperLink at {address} did not start the run")
    return Submitted(int(response.run_id), address, root_certificates)


def _log_lines(submitted: Submitted) -> Iterator[str]:
    from flwr.proto.control_pb2 import StreamLogsRequest

    client = _control_client(submitted.address, submitted.root_certificates)
    pending = ""
    try:
        for response in client.StreamLogs(
            StreamLogsRequest(run_id=submitted.run_id, after_timestamp=0.0)
        ):
            pending += response.log_output
            *lines, pending = pending.split("\n")
            yield from lines
    finally:
        client.close()
    if pending:
        yield pending


def follow_run(
    submitted: Submitted,
    on_progress: Callable[[dict[str, Any]], None],
    on_log: Callable[[str], None] | None = None,
) -> None:
    """Stream the run's log until it ends: each ``fedgate-progress`` line to ``on_progress``,
    every other line to ``on_log``."""
    for line in _log_lines(submitted):
        marker = line.find(PROGRESS_PREFIX)
        if marker >= 0:
            try:
                on_progress(json.loads(line[marker + len(PROGRESS_PREFIX) :]))
                continue
            except json.JSONDecodeError:
                pass
        if on_log is not None:
            on_log(line)


def online_supernodes(address: str, root_certificates: Path | None = None) -> int:
    """How many SuperNodes the SuperLink at ``address`` holds online now (Control API)."""
    from flwr.proto.control_pb2 import ListNodesRequest
    from flwr.supercore.constant import NodeStatus

    client = _control_client(address, root_certificates)
    try:
        response = client.ListNodes(ListNodesRequest())
    finally:
        client.close()
    return sum(1 for node in response.nodes_info if node.status == NodeStatus.ONLINE)


def register_supernode(
    address: str, public_key: Path, name: str, root_certificates: Path | None = None
) -> int:
    """Register a site's SuperNode public key (OpenSSH, a NIST EC curve) at a SuperLink that
    authenticates SuperNodes; returns the node id Flower assigned. ValueError if the key is
    not one Flower accepts."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.proto.control_pb2 import RegisterNodeRequest
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    try:
        key = serialization.load_ssh_public_key(public_key.read_bytes())
    except (OSError, ValueError) as error:
        raise ValueError(f"{public_key}: not an OpenSSH public key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{public_key}: Flower authenticates SuperNodes by EC keys (NIST curves)")
    client = _control_client(address, root_certificates)
    try:
        response = client.RegisterNode(
            request=RegisterNodeRequest(public_key=public_key_to_bytes(key), name=name)
        )
    finally:
        client.close()
    return int(response.node_id)
