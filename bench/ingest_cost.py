"""Ingest cost: the server's CPU seconds per GB, and the rate with a Python sender (issue 19, 3).

    PYTHONPATH=$PWD .venv/bin/python -m bench.ingest_cost [--instances 200] [--rounds 3]

The sender is what a new user writes: dicomweb-client's ``store_instances`` (pydicom encodes
each dataset, requests posts the message in 1 MB chunks), in a process of its own on the same
machine, so the sender's CPU competes with the server's as it would here. The same Part 10
files are sent, alternating, to a fresh gateway (embedded store, its defaults) and to a fresh
Orthanc 1.10 + DICOMweb (the Debian package at its defaults: tests/support/orthanc.py), each
after a warm-up request and with the page cache written back first (bench.ingest's protocol).

Measured per request, for each server: the sender's wall time from its call to the answer
(the rate), the CPU the server's processes used (``utime + stime`` of ``/proc/PID/stat``, all
their threads and child processes) from just before the request until 1 s after the answer
(so deferred work, such as indexing after the commit, counts), per GB of Part 10 data sent;
and the sender's own CPU. Every answer is checked: each instance sent is in its
ReferencedSOPSequence (DESIGN.md: never trust the status code alone).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ingest import body, instances, settle, stow
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Deferred work after the answer that still belongs to the request's cost.
AFTER_ANSWER_SECONDS = 1.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of every process below it (all threads: /proc/PID/stat)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # The command name is in parentheses and may hold spaces: split after its end.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    total = 0.0
    for candidate, seconds in times.items():
        ancestor = candidate
        while ancestor not in (0, 1):
            if ancestor == pid:
                total += seconds
                break
            ancestor = parents.get(ancestor, 0)
    return total


@dataclass
class Measurement:
    """One timed request into one server."""

    seconds: float
    server_cpu: float
    sender_cpu: float
    #: The sender's time before its first byte (encoding the datasets and the message).
    encoding_seconds: float
    gigabytes: float
    instances: int

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def cpu_per_gb(self) -> float:
        return self.server_cpu / self.gigabytes


def send_with_dicomweb_client(url: str, folder: Path) -> dict[str, Any]:
    """Run the sender in its own process; its JSON report (see :func:`sender_main`)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.ingest_cost", "--send", url, "--files", str(folder)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the sender failed: {result.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def sender_main(url: str, folder: Path) -> None:
    """The sender process: read the files (untimed), then one ``store_instances`` call."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    datasets = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    client = DICOMwebClient(url)
    # When the message is encoded (every dataset written, the multipart body built) and its
    # first byte about to go out: the server can do nothing before that moment.
    encoded_at: list[float] = []
    encode = client._encode_multipart_message

    def timed_encode(*args: Any, **kwargs: Any) -> bytes:
        message: bytes = encode(*args, **kwargs)
        encoded_at.append(time.perf_counter())
        return message

    client._encode_multipart_message = timed_encode  # type: ignore[method-assign]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    answer = client.store_instances(datasets)
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    sent = {str(dataset.SOPInstanceUID) for dataset in datasets}
    referenced = {
        str(item.ReferencedSOPInstanceUID) for item in answer.get("ReferencedSOPSequence", [])
    }
    failed = len(answer.get("FailedSOPSequence", []))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "encoding_seconds": encoded_at[0] - started,
                "cpu": (cpu_after.ru_utime + cpu_after.ru_stime)
                - (cpu_before.ru_utime + cpu_before.ru_stime),
                "instances": len(datasets),
                "stored": len(sent & referenced),
                "failed": failed,
            }
        )
    )


def measure(pid: int, url: str, folder: Path, gigabytes: float) -> Measurement:
    """One request by the Python sender, with the server's CPU around it."""
    cpu_before = process_tree_cpu_seconds(pid)
    report = send_with_dicomweb_client(url, folder)
    time.sleep(AFTER_ANSWER_SECONDS)
    cpu_after = process_tree_cpu_seconds(pid)
    if report["stored"] != report["instances"] or report["failed"]:
        raise RuntimeError(f"{url} did not store every instance: {report}")
    return Measurement(
        seconds=report["seconds"],
        server_cpu=cpu_after - cpu_before,
        sender_cpu=report["cpu"],
        encoding_seconds=report["encoding_seconds"],
        gigabytes=gigabytes,
        instances=report["instances"],
    )


def write_files(parts: list[bytes], folder: Path) -> float:
    """The instances as Part 10 files for the sender; their total size in GB."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(parts):
        (folder / f"{index:06d}.dcm").write_bytes(data)
    return sum(len(data) for data in parts) / 1e9


def run(instance_count: int, rounds: int, work: Path) -> dict[str, list[Measurement]]:
    """Alternate fresh gateways and Orthancs; every round's measurements per server."""
    files = work / "files"
    gigabytes = write_files(instances(instance_count), files)
    warm_up = body(instances(4, seed=8))
    results: dict[str, list[Measurement]] = {"gateway": [], "orthanc": []}
    for round_index in range(rounds):
        gateway = GatewayProcess(work / f"gateway-{round_index}").start()
        try:
            assert gateway.process is not None
            stow(gateway.dicomweb_url + "/studies", warm_up)
            settle()
            results["gateway"].append(
                measure(gateway.process.pid, gateway.dicomweb_url, files, gigabytes)
            )
        finally:
            gateway.stop()
            shutil.rmtree(work / f"gateway-{round_index}", ignore_errors=True)
        orthanc = OrthancServer(work / f"orthanc-{round_index}").start()
        try:
            assert orthanc.process is not None
            stow(orthanc.dicomweb_url + "/studies", warm_up)
            settle()
            results["orthanc"].append(
                measure(orthanc.process.pid, orthanc.dicomweb_url, files, gigabytes)
            )
        finally:
            orthanc.stop()
            shutil.rmtree(work / f"orthanc-{round_index}", ignore_errors=True)
        print(
            f"round {round_index + 1}: "
            + ", ".join(
                f"{name} {items[-1].seconds:.2f} s, server CPU {items[-1].server_cpu:.2f} s"
                for name, items in results.items()
            ),
            flush=True,
        )
    return results


def report(results: dict[str, list[Measurement]], load: str) -> str:
    """The table of docs/benchmarks.md: medians over rounds, and the two target ratios."""
    names = {"gateway": "fedgate gateway", "orthanc": "Orthanc 1.10 + DICOMweb (defaults)"}
    lines = [
        "| server | instances/s (Python sender) | MB/s | server CPU s per GB "
        "| sender CPU s per GB | sender encoding s | first byte to answer s |",
        "|---|---|---|---|---|---|---|",
    ]
    medians: dict[str, tuple[float, float]] = {}
    for key, items in results.items():
        rate = statistics.median(item.rate for item in items)
        cpu_per_gb = statistics.median(item.cpu_per_gb for item in items)
        sender = statistics.median(item.sender_cpu / item.gigabytes for item in items)
        megabytes_per_s = statistics.median(item.gigabytes * 1000 / item.seconds for item in items)
        encoding = statistics.median(item.encoding_seconds for item in items)
        transfer = statistics.median(item.seconds - item.encoding_seconds for item in items)
        medians[key] = (rate, cpu_per_gb)
        lines.append(
            f"| {names[key]} | {rate:.0f} | {megabytes_per_s:.0f} | {cpu_per_gb:.2f} "
            f"| {sender:.2f} | {encoding:.3f} | {transfer:.3f} |"
        )
    rate_ratio = medians["gateway"][0] / medians["orthanc"][0]
    cpu_ratio = medians["gateway"][1] / medians["orthanc"][1]
    lines += [
        "",
        f"rate gateway / Orthanc: {rate_ratio:.2f}x (target >= 2)",
        f"CPU per GB gateway / Orthanc: {cpu_ratio:.2f} (target <= 1)",
        f"load average at the end: {load}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--send", help=argparse.SUPPRESS)  # the sender process's own mode
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        sender_main(args.send, args.files)
        return
    print(f"load average at the start: {Path('/proc/loadavg').read_text().strip()}")
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-cost-") as work:
        results = run(args.instances, args.rounds, Path(work))
    print()
    print(report(results, Path("/proc/loadavg").read_text().strip()))


if __name__ == "__main__":
    main()
