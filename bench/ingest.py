"""STOW-RS ingest: the gateway against Orthanc, measured in the same run.

    .venv/bin/python -m bench.ingest [--instances 200] [--rounds 3] [--gigabyte]

Sends the same N synthetic 512x512 16-bit CT instances (deterministic phantom slices) in one
STOW-RS request to a fresh gateway (embedded store) and to a fresh Orthanc (Debian package,
DICOMweb plugin), alternating, each after a warm-up request of 4 other instances and with the
page cache written back (then 2 s of quiet), each server's archive removed after its round,
and prints instances/s, MB/s, their ratio, and the gateway's peak RSS. The quiet time and the
removal keep later rounds from paying for earlier ones: without them, on this machine's
virtual disk, both servers' times grew by a third or more from the fourth round on.
``--gigabyte`` also streams a single ~1 GB request into the gateway and reports its peak RSS
during it (the body is generated on the fly; the client holds one instance at a time).
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from fedgate.phantom import PhantomSpec, derived_uid, generate_phantom
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer

BOUNDARY = "fedgate-bench-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def instances(count: int, seed: int = 7) -> list[bytes]:
    phantom = generate_phantom(
        PhantomSpec(
            seed=seed,
            rows=512,
            columns=512,
            slices=count,
            pixel_spacing_mm=0.7,
            slice_thickness_mm=1.0,
            lesion_diameters_mm=(10.0,),
        )
    )
    result = []
    for dataset in phantom.instances():
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        result.append(buffer.getvalue())
    return result


def body(parts: list[bytes]) -> bytes:
    chunks = []
    for part in parts:
        chunks += [
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            part,
            b"\r\n",
        ]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


#: Quiet time after the write-back: the virtual disk here goes on flushing for a while after
#: sync returns, and the next timed request would pay for it.
SETTLE_SECONDS = 2.0


def settle() -> None:
    """Write back what the previous round left in the page cache, so that neither server's
    timed request pays for the other's 100 MB going to disk."""
    os.sync()
    time.sleep(SETTLE_SECONDS)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stow(url: str, payload: bytes) -> float:
    """One STOW-RS request with the standard library's HTTP client.

    Not httpx: its upload path tops out near 300 MB/s here, below what both servers can take,
    and would measure the client instead of the servers. http.client hands the body to
    ``sendall`` in one call.
    """
    parsed = urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    started = time.perf_counter()
    connection.request("POST", parsed.path, body=payload, headers={"Content-Type": CONTENT_TYPE})
    response = connection.getresponse()
    text = response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{url} answered {response.status}: {text[:300]!r}")
    return elapsed


def gigabyte_request(gateway: GatewayProcess, target_bytes: int) -> tuple[int, float, float]:
    """Stream ~target_bytes of distinct instances in one request; return count, s, peak MB."""
    template = instances(8, seed=99)
    import pydicom

    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in template]
    per_instance = len(template[0])
    count = target_bytes // per_instance
    part_header = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()

    def serialized(index: int) -> bytes:
        dataset = datasets[index % len(datasets)]
        uid = derived_uid("bench-gigabyte", index)
        dataset.SOPInstanceUID = uid
        dataset.file_meta.MediaStorageSOPInstanceUID = uid
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    def generate() -> Iterator[bytes]:
        for index in range(count):
            yield part_header + serialized(index) + b"\r\n"
        yield f"--{BOUNDARY}--\r\n".encode()

    assert gateway.process is not None
    started = time.perf_counter()
    response = httpx.post(
        gateway.dicomweb_url + "/studies",
        content=generate(),
        headers={"Content-Type": CONTENT_TYPE},
        timeout=1800,
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"gateway answered {response.status_code}: {response.text[:300]}")
    return count, elapsed, peak_rss_mb(gateway.process.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gigabyte", action="store_true")
    args = parser.parse_args()

    print(f"generating {args.instances} instances of 512x512x16 bit ...", flush=True)
    parts = instances(args.instances)
    payload = body(parts)
    megabytes = len(payload) / 1e6
    print(f"one request: {args.instances} instances, {megabytes:.1f} MB")
    # Another study: each server's first request pays for what a long-running server has
    # done long before (lazy imports, thread pools, caches), so each gets this one first.
    warm_up = body(instances(4, seed=8))

    gateway_times: list[float] = []
    orthanc_times: list[float] = []
    gateway_peak = 0.0
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-") as work:
        for round_index in range(args.rounds):
            # A fresh server each round so both store into an empty archive.
            gateway = GatewayProcess(Path(work) / f"gateway-{round_index}").start()
            try:
                assert gateway.process is not None
                stow(gateway.dicomweb_url + "/studies", warm_up)
                settle()
                gateway_times.append(stow(gateway.dicomweb_url + "/studies", payload))
                gateway_peak = max(gateway_peak, peak_rss_mb(gateway.process.pid))
            finally:
                gateway.stop()
                shutil.rmtree(Path(work) / f"gateway-{round_index}", ignore_errors=True)
            orthanc = OrthancServer(Path(work) / f"orthanc-{round_index}").start()
            try:
                stow(orthanc.dicomweb_url + "/studies", warm_up)
                settle()
                orthanc_times.append(stow(orthanc.dicomweb_url + "/studies", payload))
            finally:
                orthanc.stop()
                shutil.rmtree(Path(work) / f"orthanc-{round_index}", ignore_errors=True)
            print(
                f"round {round_index + 1}: gateway {gateway_times[-1]:.2f} s, "
                f"orthanc {orthanc_times[-1]:.2f} s",
                flush=True,
            )

        gateway_s = statistics.median(gateway_times)
        orthanc_s = statistics.median(orthanc_times)
        print("\n| server | instances/s | MB/s |")
        print("|---|---|---|")
        print(
            f"| fedgate gateway | {args.instances / gateway_s:.0f} | {megabytes / gateway_s:.0f} |"
        )
        print(
            f"| Orthanc 1.10 + DICOMweb | {args.instances / orthanc_s:.0f} | "
            f"{megabytes / orthanc_s:.0f} |"
        )
        print(f"\nratio gateway/Orthanc: {orthanc_s / gateway_s:.2f}x (median of {args.rounds})")
        print(f"gateway peak RSS: {gateway_peak:.0f} MB")

        if args.gigabyte:
            gateway = GatewayProcess(Path(work) / "gateway-gigabyte").start()
            try:
                assert gateway.process is not None
                baseline = current_rss_mb(gateway.process.pid)
                count, seconds, peak = gigabyte_request(gateway, 1024**3)
                print(
                    f"\n1 GB request: {count} instances in {seconds:.1f} s "
                    f"({count / seconds:.0f} instances/s); gateway RSS at start "
                    f"{baseline:.0f} MB, peak {peak:.0f} MB"
                )
            finally:
                gateway.stop()


if __name__ == "__main__":
    main()
