"""A hundred sites on one hub (issue 19, item 4): a real ``fedgate hub`` process over real sites.

Each site is a real federated API (:func:`gateway.federated.api.federated_routes` over its own
small SQLite findings index, with its audit log fsynced, as tests/federated/servers.py builds
one) behind its own loopback port. ``--processes`` processes serve them (default 4, each one
uvicorn server listening on its sites' ports and dispatching by port), so that a hundred sites
fit on a small machine. The hub is ``fedgate hub`` as a user runs it, with a signing key: every
question carries an Ed25519 assertion per site, which every site verifies.

Per round, three ways of asking the same question:

- **hub**: the analyst asks the hub (one keep-alive connection), which asks every site;
- **peer, all at once**: this process asks every site at the same moment, as a hub with no
  cost of its own would (a bare HTTP/1.1 client on asyncio streams, one kept-alive connection
  per site, the same headers and assertions), and records each site's own latency. The
  slowest site's p50 here is the peer of the target: the hub's p50 within 50 ms of it;
- **each site alone**: every site asked on its own, one after the other (no contention): its
  latency on an idle machine, for reference.

Then a second hub process whose last site is hung (it accepts connections and reads requests
but never answers) with a per-site timeout of ``--hung-timeout``: that site must be reported
``timeout`` and the answer come at the timeout plus a small overhead. The hub's RSS is sampled
every 20 ms throughout (``VmRSS``; ``VmHWM`` at the end).

Run: ``python -m bench.hub`` (defaults: 100 sites, 4 processes, 20 rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from gateway.auth import AuthClient, AuthSettings, TrustedHub
from gateway.federated.settings import FederatedSettings
from gateway.hub_assertion import load_private_key, sign_assertion, write_key_pair
from gateway.index import FindingsIndex, IndexSettings
from tests.federated.servers import HangingServer, site_app
from tests.federated.synthetic import SyntheticPatient, write_patients
from tests.federated.test_hub import site_patients
from tests.support.ports import free_port, wait_for_http
from tests.support.process import spawn, terminate

REPO_ROOT = Path(__file__).resolve().parents[1]
HUB_NAME = "bench-hub"
#: The hub's credential at every site (roles ``hub`` and ``exact``: it relays the research
#: office's exact questions, answered with suppression and no noise, so sums are checkable).
SITE_TOKEN = "bench-hub-credential-at-the-sites"
ANALYST_TOKEN = "bench-analyst-token"
ANALYST = "analyst"

#: The questions asked, by name: (method, path, query parameters, JSON body, kind).
QUESTIONS: dict[str, tuple[str, str, dict[str, str], dict[str, Any] | None]] = {
    "count": ("GET", "/count", {"PatientSex": "F"}, None),
    "histogram": (
        "POST",
        "/aggregate",
        {},
        {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "sex"}}},
    ),
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def site_truth(number: int) -> tuple[int, int, int]:
    """Site ``number``'s women, men and women with a nodule: every count above the minimum
    cell size (10), so that the combined count is an exact sum this benchmark can check."""
    return 20 + number % 7, 15 + number % 5, 11 + number % 3


def site_name(number: int) -> str:
    return f"site-{number:03d}"


def site_cohort(number: int) -> list[SyntheticPatient]:
    """Site ``number``'s patients, as tests/federated/test_hub.py builds a site's."""
    return site_patients(f"{site_name(number)}-", *site_truth(number))


# -- the sites' processes ----------------------------------------------------------------------


def _by_port(apps: dict[int, Any]) -> Any:
    """One ASGI app that hands each connection to the site listening on its local port."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await apps[scope["server"][1]](scope, receive, send)

    return app


def serve_sites(numbers: list[int], data_dir: Path, public_key: str, ready: Path) -> None:
    """Serve sites ``numbers`` (one port each) until killed; their ports go to ``ready``."""
    apps, sockets, ports = {}, [], {}
    for number in numbers:
        name = site_name(number)
        index = FindingsIndex.open(IndexSettings(), data_dir / name)
        write_patients(index, site_cohort(number))
        auth = AuthSettings(
            clients=[
                AuthClient(name="hub", token_sha256=_sha256(SITE_TOKEN), roles=["hub", "exact"])
            ],
            hubs=[TrustedHub(name=HUB_NAME, public_key=public_key, audience=name)],
        )
        # The exact role's cap on questions per person: high enough for the rounds asked.
        settings = FederatedSettings.model_validate({"exact": {"max_answers_per_person": 10**9}})
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        apps[port] = site_app(index, settings, auth)
        sockets.append(sock)
        ports[name] = port
    config = uvicorn.Config(
        _by_port(apps), log_level="warning", access_log=False, lifespan="off", backlog=1024
    )
    server = uvicorn.Server(config)
    threading.Thread(target=_announce, args=(server, ports, ready), daemon=True).start()
    server.run(sockets=sockets)


def _announce(server: uvicorn.Server, ports: dict[str, int], ready: Path) -> None:
    while not server.started:
        time.sleep(0.02)
    temporary = ready.with_suffix(".tmp")
    temporary.write_text(json.dumps(ports))
    temporary.rename(ready)


@contextmanager
def site_processes(
    sites: int, processes: int, folder: Path, public_key: Path
) -> Iterator[dict[str, str]]:
    """``sites`` sites served by ``processes`` processes: {name: federated API root}."""
    numbers = list(range(sites))
    shares = [numbers[i::processes] for i in range(processes) if numbers[i::processes]]
    started, readies = [], []
    try:
        for share_number, share in enumerate(shares):
            ready = folder / f"sites-{share_number}.json"
            command = [
                sys.executable, "-m", "bench.hub", "serve-sites",
                "--numbers", ",".join(map(str, share)),
                "--data", str(folder / "sites"),
                "--public-key", str(public_key),
                "--ready", str(ready),
            ]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            started.append(
                spawn(command, folder / f"sites-{share_number}.log", cwd=REPO_ROOT, env=env)
            )
            readies.append(ready)
        deadline = time.monotonic() + 120
        while not all(ready.exists() for ready in readies):
            for process in started:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"a sites process exited ({process.returncode}); see {folder}"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError("the sites' processes did not start within 120 s")
            time.sleep(0.1)
        ports: dict[str, int] = {}
        for ready in readies:
            ports.update(json.loads(ready.read_text()))
        yield {name: f"http://127.0.0.1:{ports[name]}/federated/v1" for name in sorted(ports)}
    finally:
        for process in started:
            terminate(process)


# -- the hub's process -------------------------------------------------------------------------


@dataclass
class HubProcess:
    url: str
    pid: int
    rss_samples: list[int] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        """User and system CPU time the hub has used (proc(5): fields 14 and 15)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def runqueue_seconds(self) -> float:
        """Time the hub's event loop (its main thread) was ready to run but waited for a CPU
        (``/proc/PID/schedstat``, second field): on a busy machine, what CPU time costs."""
        return int(Path(f"/proc/{self.pid}/schedstat").read_text().split()[1]) / 1e9

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0


@contextmanager
def hub_process(
    folder: Path, sites: list[dict[str, Any]], key_file: Path, timeout: float, label: str
) -> Iterator[HubProcess]:
    """``fedgate hub`` over ``sites``; its RSS sampled every 20 ms while it runs."""
    port = free_port()
    config = {
        "name": HUB_NAME,
        "signing_key_file": str(key_file),
        "listen": {"host": "127.0.0.1", "port": port},
        "timeout_seconds": timeout,
        "auth": {
            "clients": [
                {"name": ANALYST, "token_sha256": _sha256(ANALYST_TOKEN), "roles": ["exact"]}
            ]
        },
        "sites": sites,
    }
    path = folder / f"hub-{label}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = spawn(
        [sys.executable, "-m", "fedgate", "hub", "--config", str(path)],
        folder / f"hub-{label}.log",
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    stop = threading.Event()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60, process=process)
        hub = HubProcess(f"http://127.0.0.1:{port}/federated/v1", process.pid)

        def sample() -> None:
            while not stop.wait(0.02):
                hub.rss_samples.append(hub.status_kib("VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        yield hub
        stop.set()
        sampler.join()
        hub.rss_samples.append(hub.status_kib("VmHWM"))
    finally:
        stop.set()
        terminate(process)


def ask_hub(client: httpx.Client, hub: str, question: str) -> tuple[float, dict[str, Any]]:
    """(seconds, answer) of one question to the hub."""
    method, path, params, body = QUESTIONS[question]
    started = time.perf_counter()
    response = client.request(
        method,
        f"{hub}{path}",
        params=params,
        json=body,
        headers={"Authorization": f"Bearer {ANALYST_TOKEN}"},
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return elapsed, answer


# -- the peer: every site asked at once by a client that costs (almost) nothing ----------------


class BareConnection:
    """One kept-alive HTTP/1.1 connection to a site: a request written whole, the response
    read by its ``Content-Length`` (Starlette always sends one). The least a client can do."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.root = parts.hostname or "", parts.port or 80, parts.path
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        lines = [f"{method} {self.root}{target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "", ""]
        writer.write("\r\n".join(lines).encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


class Peer:
    """Asks sites directly with the hub's credential and a fresh assertion per site."""

    def __init__(self, sites: dict[str, str], key_file: Path) -> None:
        self.key = load_private_key(key_file.read_bytes())
        self.connections = {name: BareConnection(url) for name, url in sites.items()}

    async def ask(self, name: str, question: str) -> float:
        method, path, params, body = QUESTIONS[question]
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        payload = json.dumps(body).encode() if body is not None else b""
        headers = {
            "Authorization": f"Bearer {SITE_TOKEN}",
            "Fedgate-On-Behalf-Of": sign_assertion(self.key, HUB_NAME, ANALYST, name, ["exact"]),
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        status = await self.connections[name].request(method, target, headers, payload)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"{name} answered HTTP {status}")
        return elapsed

    async def all_at_once(self, question: str) -> dict[str, float]:
        names = list(self.connections)
        times = await asyncio.gather(*(self.ask(name, question) for name in names))
        return dict(zip(names, times, strict=True))

    async def one_by_one(self, question: str) -> dict[str, float]:
        return {name: await self.ask(name, question) for name in self.connections}

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


# -- the run -----------------------------------------------------------------------------------


@dataclass
class QuestionFigures:
    hub: list[float] = field(default_factory=list)
    #: Per site: its latencies when every site was asked at once / when asked alone.
    at_once: dict[str, list[float]] = field(default_factory=dict)
    alone: dict[str, list[float]] = field(default_factory=dict)
    last_answer: dict[str, Any] = field(default_factory=dict)

    def slowest_p50(self, per_site: dict[str, list[float]]) -> float:
        return max(statistics.median(times) for times in per_site.values())


@dataclass
class HubRun:
    sites: int
    processes: int
    rounds: int
    questions: dict[str, QuestionFigures]
    expected_women: int
    hung_timeout: float
    hung_seconds: list[float]
    #: Per hung-site question: the longest any site took (the hung one: its timeout).
    hung_waits: list[float]
    hung_answer: dict[str, Any]
    rss_kib: list[int]
    #: The hub's CPU seconds per question (user + system), over the timed rounds.
    hub_cpu_seconds: float
    #: Seconds per question the hub was ready to run but waited for a CPU (timed rounds, and
    #: the hung-site questions).
    hub_waited_seconds: float
    hung_waited_seconds: float


def run(
    sites: int = 100,
    processes: int = 4,
    rounds: int = 20,
    hung_timeout: float = 2.0,
    hung_rounds: int = 5,
    site_timeout: float = 10.0,
    progress: bool = False,
) -> HubRun:
    """The whole benchmark; figures per question, the hung-site case and the hub's RSS."""
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-hub-") as name:
        folder = Path(name)
        key_file, public_file = write_key_pair(folder / "keys")
        with site_processes(sites, processes, folder, public_file) as roots:
            configs = [{"name": n, "url": url, "token": SITE_TOKEN} for n, url in roots.items()]
            figures = {question: QuestionFigures() for question in QUESTIONS}
            rss: list[int] = []
            peer = Peer(roots, key_file)
            loop = asyncio.new_event_loop()
            try:
                with (
                    hub_process(folder, configs, key_file, site_timeout, "all") as hub,
                    httpx.Client(timeout=60) as client,
                ):
                    for question in QUESTIONS:  # warm-up: connections, caches, first plans
                        ask_hub(client, hub.url, question)
                        loop.run_until_complete(peer.all_at_once(question))
                    cpu_before, waited_before = hub.cpu_seconds(), hub.runqueue_seconds()
                    for number in range(rounds):
                        for question, figure in figures.items():
                            elapsed, figure.last_answer = ask_hub(client, hub.url, question)
                            figure.hub.append(elapsed)
                            at_once = loop.run_until_complete(peer.all_at_once(question))
                            alone = loop.run_until_complete(peer.one_by_one(question))
                            for site, seconds in at_once.items():
                                figure.at_once.setdefault(site, []).append(seconds)
                                figure.alone.setdefault(site, []).append(alone[site])
                        if progress:
                            print(f"round {number + 1}/{rounds}", file=sys.stderr, flush=True)
                    # Only the hub's questions use its CPU in these rounds.
                    asked = rounds * len(QUESTIONS)
                    hub_cpu = (hub.cpu_seconds() - cpu_before) / asked
                    hub_waited = (hub.runqueue_seconds() - waited_before) / asked
                rss += hub.rss_samples
            finally:
                peer.close()
                loop.close()
            hanging = HangingServer().start()
            try:
                # The last site replaced by a hung one, with its own (short) timeout.
                hung = {
                    "name": "hung",
                    "url": f"{hanging.url}/federated/v1",
                    "token": SITE_TOKEN,
                    "timeout_seconds": hung_timeout,
                }
                hung_seconds, hung_waits = [], []
                with (
                    hub_process(
                        folder, [*configs[:-1], hung], key_file, site_timeout, "hung"
                    ) as hub,
                    httpx.Client(timeout=60) as client,
                ):
                    ask_hub(client, hub.url, "count")
                    waited_before = hub.runqueue_seconds()
                    for _ in range(hung_rounds):
                        elapsed, hung_answer = ask_hub(client, hub.url, "count")
                        hung_seconds.append(elapsed)
                        # What the hub had to wait for: the hung site's timeout, or a slower
                        # answer of another site (each site's time as the hub measured it).
                        hung_waits.append(max(site["seconds"] for site in hung_answer["sites"]))
                    hung_waited = (hub.runqueue_seconds() - waited_before) / hung_rounds
                rss += hub.rss_samples
            finally:
                hanging.stop()
    return HubRun(
        sites=sites,
        processes=processes,
        rounds=rounds,
        questions=figures,
        expected_women=sum(site_truth(number)[0] for number in range(sites)),
        hung_timeout=hung_timeout,
        hung_seconds=hung_seconds,
        hung_waits=hung_waits,
        hung_answer=hung_answer,
        rss_kib=rss,
        hub_cpu_seconds=hub_cpu,
        hub_waited_seconds=hub_waited,
        hung_waited_seconds=hung_waited,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def report(result: HubRun) -> list[str]:
    lines = [
        f"Hub over {result.sites} real sites ({result.processes} site processes), "
        f"{result.rounds} rounds, medians:",
        "",
        "| question | hub p50 ms | hub p95 ms | slowest site p50, all at once ms "
        "| hub over it ms | all at once, last answer p50 ms | slowest site p50 alone ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for question, figure in result.questions.items():
        hub_p50 = statistics.median(figure.hub)
        slowest = figure.slowest_p50(figure.at_once)
        rounds = len(figure.hub)
        last = statistics.median(
            max(times[i] for times in figure.at_once.values()) for i in range(rounds)
        )
        hub_p95 = sorted(figure.hub)[max(0, round(0.95 * rounds) - 1)]
        lines.append(
            f"| {question} | {_ms(hub_p50)} | {_ms(hub_p95)} | {_ms(slowest)} | "
            f"{_ms(hub_p50 - slowest)} | {_ms(last)} | {_ms(figure.slowest_p50(figure.alone))} |"
        )
    statuses = [site["status"] for site in result.hung_answer["sites"]]
    hung_p50 = statistics.median(result.hung_seconds)
    beyond = [s - w for s, w in zip(result.hung_seconds, result.hung_waits, strict=True)]
    lines += [
        "",
        f"One site hung (timeout {result.hung_timeout:g} s): answer p50 {_ms(hung_p50)} ms, "
        f"max {_ms(max(result.hung_seconds))} ms (p50 over the timeout: "
        f"{_ms(hung_p50 - result.hung_timeout)} ms; over the longest site's time: "
        f"{_ms(statistics.median(beyond))} ms); "
        f"{statuses.count('ok')} sites ok, {statuses.count('timeout')} timeout; the hub "
        f"waited {_ms(result.hung_waited_seconds)} ms per question for a CPU.",
        f"Hub CPU per question: {_ms(result.hub_cpu_seconds)} ms; waiting for a CPU: "
        f"{_ms(result.hub_waited_seconds)} ms per question.",
        f"Hub RSS: max {max(result.rss_kib) / 1024:.0f} MiB over {len(result.rss_kib)} samples.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="A hundred sites on one hub (issue 19, item 4)")
    actions = parser.add_subparsers(dest="action")
    serve = actions.add_parser("serve-sites", help="(internal) serve some of the sites")
    serve.add_argument("--numbers", required=True)
    serve.add_argument("--data", type=Path, required=True)
    serve.add_argument("--public-key", type=Path, required=True)
    serve.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4, help="processes serving the sites")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--hung-timeout", type=float, default=2.0)
    args = parser.parse_args()
    if args.action == "serve-sites":
        numbers = [int(number) for number in args.numbers.split(",")]
        serve_sites(numbers, args.data, args.public_key.read_text(), args.ready)
        return
    result = run(args.sites, args.processes, args.rounds, args.hung_timeout, progress=True)
    print("\n".join(report(result)))


if __name__ == "__main__":
    main()
