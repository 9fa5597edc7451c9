"""The whole pipeline against the inference service driven directly, in one run.

    .venv/bin/python -m bench.pipeline [--studies 50] [--slices 100] [--size 256]

Starts ``fedgate inference`` (bundled models) and a gateway on the embedded store routing
chest CTs to ``nodule-detector``. Sends ``--studies`` phantom studies of ``--slices`` slices by
STOW-RS (all sent before the first becomes stable), waits for every job, and reports:

- throughput (studies/min) from the first job's creation to the last job's end;
- latency from "stable" (the job's creation by the scheduler) to "SR stored" (the job's end,
  recorded after the inference service stored the SR and SEG through the gateway), p50/p95;
- the gateway's own time per job: dispatch and result handling (the attempt's duration minus
  the inference service's own stages) and the wait from creation to start.

The peer, measured first in the same run: the inference service driven directly with the same
series, the same concurrency, and a gateway (without routing rules) as source and
destination. The ratio of the two throughputs is what the pipeline costs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from fedgate.phantom import PhantomSpec, generate_phantom
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess, bundled_models

STAGES = ("fetch", "decode", "preprocess", "model", "postprocess", "sr_seg", "store")
CONCURRENCY = 2  # the inference service's default max_analyses


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def studies(
    count: int, slices: int, size: int, first_seed: int = 5000
) -> list[tuple[str, str, bytes]]:
    """(study UID, series UID, STOW body) of each phantom study, generated up front."""
    bodies = []
    for index in range(count):
        phantom = generate_phantom(
            PhantomSpec(
                seed=first_seed + index,
                rows=size,
                columns=size,
                slices=slices,
                pixel_spacing_mm=192 / size,
                slice_thickness_mm=1.5,
                lesion_diameters_mm=(10.0,),
            )
        )
        parts = []
        for dataset in phantom.instances():
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            parts.append(
                b"--b\r\nContent-Type: application/dicom\r\n\r\n" + buffer.getvalue() + b"\r\n"
            )
        bodies.append(
            (
                phantom.truth.study_instance_uid,
                phantom.truth.series_instance_uid,
                b"".join(parts) + b"--b--\r\n",
            )
        )
        print(f"\rgenerated {index + 1}/{count} studies", end="", flush=True)
    print()
    return bodies


def send(dicomweb_url: str, bodies: list[tuple[str, str, bytes]]) -> None:
    """STOW-RS each study's body to ``dicomweb_url`` (a gateway's, or a PACS's)."""
    started = time.perf_counter()
    for _, _, body in bodies:
        response = httpx.post(
            dicomweb_url + "/studies",
            content=body,
            timeout=300,
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        )
        response.raise_for_status()
    print(f"sent {len(bodies)} studies in {time.perf_counter() - started:.1f} s")


def wait_for_jobs(gateway: GatewayProcess, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = httpx.get(gateway.url + "/jobs", params={"limit": "1000"}).json()["jobs"]
        done = [j for j in jobs if j["state"] in ("succeeded", "failed", "dead")]
        print(f"\rjobs finished: {len(done)}/{count}", end="", flush=True)
        if len(done) >= count:
            print()
            return [httpx.get(f"{gateway.url}/jobs/{j['id']}").json() for j in jobs]
        time.sleep(0.5)
    raise TimeoutError("the pipeline did not finish in time")


async def drive_directly(
    inference_url: str, gateway: GatewayProcess, series: list[tuple[str, str]]
) -> float:
    """The same analyses straight to the inference service, CONCURRENCY at a time."""
    pending = list(series)

    async def worker(http: httpx.AsyncClient) -> None:
        while pending:
            study_uid, series_uid = pending.pop(0)
            while True:
                response = await http.post(
                    inference_url + "/v1/analyses",
                    json={
                        "model": "nodule-detector",
                        "study_instance_uid": study_uid,
                        "series_instance_uid": series_uid,
                        "source": {"url": gateway.dicomweb_url},
                        "destination": {"url": gateway.url + "/results"},
                    },
                )
                if response.status_code != 429:
                    response.raise_for_status()
                    break
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    bodies = studies(args.studies, args.slices, args.size)
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-pipeline-") as work:
        root = Path(work)
        models = bundled_models(root / "models")
        inference = InferenceProcess(root / "inference", models).start()
        plain = GatewayProcess(root / "plain", {"log": {"level": "warning"}}).start()
        gateway = GatewayProcess(
            root / "gateway",
            {
                "pipeline": {"stable_after_seconds": 5, "workers": CONCURRENCY},
                "routing": [
                    {
                        "name": "chest-ct",
                        "match": {"Modality": "CT"},
                        "models": ["nodule-detector"],
                        "inference_url": inference.url,
                    }
                ],
                "log": {"level": "warning"},
            },
        ).start()
        try:
            send(plain.dicomweb_url, bodies)
            direct_seconds = asyncio.run(
                drive_directly(
                    inference.url, plain, [(study, series) for study, series, _ in bodies]
                )
            )
            direct_rate = len(bodies) / direct_seconds * 60
            send(gateway.dicomweb_url, bodies)
            jobs = wait_for_jobs(gateway, len(bodies), timeout=3600)
        finally:
            gateway.stop()
            plain.stop()
            inference.stop()
    succeeded = [j for j in jobs if j["state"] == "succeeded"]
    span = max(j["finished_at"] for j in jobs) - min(j["created_at"] for j in jobs)
    pipeline_rate = len(succeeded) / span * 60
    latency = [j["finished_at"] - j["created_at"] for j in succeeded]
    wait = [j["started_at"] - j["created_at"] for j in succeeded]
    own = [
        (j["finished_at"] - j["started_at"]) - sum(j["timings"].get(stage, 0.0) for stage in STAGES)
        for j in succeeded
    ]

    print(
        f"\n{len(succeeded)}/{len(bodies)} jobs succeeded; "
        f"{args.slices} slices of {args.size}x{args.size} each"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| pipeline throughput | {pipeline_rate:.1f} studies/min |")
    print(f"| inference service driven directly | {direct_rate:.1f} studies/min |")
    print(f"| ratio pipeline/direct | {pipeline_rate / direct_rate:.2f} |")
    print(f"| latency stable -> SR stored, p50 | {statistics.median(latency):.2f} s |")
    print(f"| latency stable -> SR stored, p95 | {percentile(latency, 0.95):.2f} s |")
    print(
        f"| gateway's own time per job (dispatch + result handling), median | "
        f"{statistics.median(own) * 1000:.0f} ms |"
    )
    print(f"| gateway's own time per job, p95 | {percentile(own, 0.95) * 1000:.0f} ms |")
    print(f"| queue wait (creation -> start), median | {statistics.median(wait):.2f} s |")


if __name__ == "__main__":
    main()
