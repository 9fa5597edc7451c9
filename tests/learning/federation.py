"""A federation on loopback for the learning tests: a real ``flower-superlink`` (started as
``fedgate learn run`` starts it), three sites each running ``fedgate learn site`` (a real
``flower-supernode`` with fedgate's ClientApp) over phantom findings indexes, and a recording
HTTP proxy between the SuperNodes and the SuperLink's Fleet API that keeps every byte exchanged.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import yaml

from fedgate.phantom_cohort import CohortPatient
from gateway.approvals import Approvals
from gateway.index import FindingsIndex, IndexSettings
from gateway.learning.plan import parse_plan
from gateway.learning.table import SiteTable, site_table
from hub.learning.runner import online_supernodes, start_superlink, wait_for_superlink
from hub.learning.settings import LearningSettings
from tests.learning.cohorts import phantom_site
from tests.support.http_server import LoopbackHTTPServer
from tests.support.ports import free_port
from tests.support.process import kill, spawn, terminate


class RecordingProxy(LoopbackHTTPServer):
    """Forwards each request to ``behind`` and records (path, request body, response body)."""

    def __init__(self, behind: str) -> None:
        self.behind = behind
        self.exchanges: list[tuple[str, bytes, bytes]] = []

    def start(self) -> RecordingProxy:
        self.start_serving()
        return self

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        client = httpx.Client(timeout=120.0)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {
                    key: value
                    for key, value in self.headers.items()
                    if key.lower() not in {"host", "content-length", "connection"}
                }
                answer = client.request(
                    self.command, proxy.behind + self.path, content=body, headers=headers
                )
                proxy.exchanges.append((self.path, body, answer.content))
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in {"content-length", "transfer-encoding", "connection"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_POST = _forward
            do_GET = _forward

        return Handler


@dataclass
class Site:
    name: str
    config: Path
    data_dir: Path
    patients: list[CohortPatient]
    process: subprocess.Popen[bytes] | None = None

    def approve(self, plan_text: str) -> str:
        sha256 = hashlib.sha256(plan_text.encode()).hexdigest()
        approvals = Approvals.open(IndexSettings(), self.data_dir)
        try:
            approvals.decide("training-plan", sha256, "approved", by="test admin")
        finally:
            approvals.close()
        return sha256

    def table(self, plan_text: str) -> SiteTable:
        index = FindingsIndex.open(IndexSettings(), self.data_dir)
        try:
            return site_table(index, parse_plan(plan_text.encode()).plan)
        finally:
            index.close()


@dataclass
class RunResult:
    returncode: int
    #: What ``fedgate learn run`` printed (its progress lines), and when: (seconds, line).
    progress: str
    timeline: list[tuple[float, str]]
    report: dict[str, Any]
    out: Path
    seconds: float


@dataclass
class Federation:
    root: Path
    superlink_port: int
    proxy: RecordingProxy | None
    superlink: subprocess.Popen[bytes]
    sites: list[Site] = field(default_factory=list)
    runs: int = 0
    #: More of hub.yaml's ``learning:`` (tls, supernode_auth) for the runs.
    learning: dict[str, Any] = field(default_factory=dict)

    def start_site(self, site: Site, *options: str) -> None:
        """``fedgate learn site`` for ``site``, with more ``options`` (TLS, the node's key)."""
        site.process = spawn(
            [
                sys.executable,
                "-m",
                "fedgate",
                "learn",
                "site",
                "--config",
                str(site.config),
                "--superlink",
                f"127.0.0.1:{self.proxy.port if self.proxy else self.superlink_port}",
                "--runtime-port",
                str(free_port()),
                "--name",
                site.name,
                *options,
            ],
            self.root / f"{site.name}.log",
            env=_environment(),
        )

    def run(self, plan_text: str, *, timeout_seconds: float = 60.0) -> RunResult:
        """``fedgate learn run`` of ``plan_text`` against this federation's SuperLink."""
        self.runs += 1
        folder = self.root / f"run{self.runs}"
        folder.mkdir()
        (folder / "plan.yaml").write_text(plan_text)
        (folder / "hub.yaml").write_text(yaml.safe_dump(self.hub_config(timeout_seconds)))
        started = time.perf_counter()
        command = [sys.executable, "-m", "fedgate", "learn", "run", "--hub-config"]
        command += [str(folder / "hub.yaml"), str(folder / "plan.yaml"), "--out"]
        command += [str(folder / "out")]
        process = subprocess.Popen(
            command, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        timeline = []
        assert process.stderr is not None
        for line in process.stderr:
            timeline.append((time.perf_counter() - started, line.rstrip("\n")))
        returncode = process.wait(timeout=600)
        seconds = time.perf_counter() - started
        report_path = folder / "out" / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        progress = "\n".join(line for _, line in timeline)
        return RunResult(returncode, progress, timeline, report, folder / "out", seconds)

    def hub_config(self, timeout_seconds: float = 60.0) -> dict[str, Any]:
        """A hub.yaml whose ``learning:`` names this federation's SuperLink."""
        return {
            "sites": [{"name": "unused", "url": "http://127.0.0.1:9"}],
            "learning": {
                "superlink": f"127.0.0.1:{self.superlink_port}",
                "state_dir": str(self.root / "hub"),
                "round_timeout_seconds": timeout_seconds,
                **self.learning,
            },
        }

    def wait_for_sites(self, count: int, timeout: float = 120.0) -> None:
        """Until ``count`` SuperNodes are online at the SuperLink: a run asks the sites that
        are connected when it starts, and a SuperNode takes seconds to start and register."""
        deadline = time.monotonic() + timeout
        address = f"127.0.0.1:{self.superlink_port}"
        while online_supernodes(address) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} SuperNodes online after {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        for site in self.sites:
            terminate(site.process, timeout=10)
        terminate(self.superlink, timeout=10)
        kill(self.superlink)
        if self.proxy is not None:
            self.proxy.stop()


def _environment() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def start_federation(
    root: Path,
    patients: int,
    sites: int = 3,
    *,
    record: bool = True,
    learning: dict[str, Any] | None = None,
    start_sites: bool = True,
) -> Federation:
    """The SuperLink (hub.yaml's ``learning`` settings from ``learning``) and ``sites`` sites of
    ``patients`` phantom patients each, their SuperNodes started unless not ``start_sites``;
    with ``record``, the SuperNodes reach the SuperLink through a :class:`RecordingProxy`."""
    learning = learning or {}
    settings = LearningSettings(port=free_port(), state_dir=root / "superlink", **learning)
    superlink = start_superlink(settings, root / "superlink.log")
    wait_for_superlink(f"127.0.0.1:{settings.port}", tls=settings.tls is not None)
    proxy = RecordingProxy(f"http://127.0.0.1:{settings.port}").start() if record else None
    federation = Federation(root, settings.port, proxy, superlink, learning=learning)
    for number in range(1, sites + 1):
        data_dir = root / f"site{number}" / "data"
        cohort = phantom_site(data_dir, number, patients)
        config = root / f"site{number}" / "gateway.yaml"
        config.write_text(yaml.safe_dump({"data_dir": str(data_dir)}))
        site = Site(f"site{number}", config, data_dir, cohort)
        federation.sites.append(site)
        if start_sites:
            federation.start_site(site)
    if start_sites:
        federation.wait_for_sites(sites)
    return federation
