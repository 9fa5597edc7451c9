"""Study-level inference: every stage of ``POST /v1/analyses`` against bare onnxruntime, one run.

    .venv/bin/python -m bench.inference [--size 512] [--slices 200] [--rounds 3] [--back-to-back 4]

Stores one chest CT phantom (512x512x200 by default, lesions of 6, 10 and 20 mm) in a fresh
Orthanc, starts ``fedgate inference`` on the bundled models, and

1. runs the ``nodule-detector`` analysis ``--rounds`` times (after one warm-up) and prints the
   median time of each stage as the service reports it (fetch, decode, preprocess, model,
   post-process, SR+SEG, store) and of everything but the model;
2. times a bare ``onnxruntime`` ``session.run`` of the same model on the same prepared tensor
   in this process (the peer: what the model alone costs);
3. sends ``--back-to-back`` analyses at once (the service runs two at a time and one model run
   at a time, so one analysis's fetch/SR overlaps another's model) and compares the
   throughput with back-to-back bare ``session.run`` calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import onnxruntime
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from inference_service.manifest import load_manifest
from inference_service.preprocess import prepare_input
from inference_service.volume import assemble_volume
from tests.support.inference import InferenceProcess, bundled_models
from tests.support.orthanc import OrthancServer

STAGES = ("fetch", "decode", "preprocess", "model", "postprocess", "sr_seg", "store")


def make_phantom(size: int, slices: int) -> Phantom:
    return generate_phantom(
        PhantomSpec(
            seed=4,
            rows=size,
            columns=size,
            slices=slices,
            pixel_spacing_mm=0.7,
            slice_thickness_mm=1.0,
            lesion_diameters_mm=(6.0, 10.0, 20.0),
        )
    )


def store(orthanc: OrthancServer, phantom: Phantom) -> float:
    client = DICOMwebClient(orthanc.dicomweb_url)
    datasets = list(phantom.instances())
    started = time.perf_counter()
    for start in range(0, len(datasets), 50):
        client.store_instances(datasets[start : start + 50])
    return time.perf_counter() - started


def analyse(url: str, orthanc: OrthancServer, phantom: Phantom) -> dict[str, Any]:
    body = {
        "model": "nodule-detector",
        "study_instance_uid": phantom.truth.study_instance_uid,
        "series_instance_uid": phantom.truth.series_instance_uid,
        "source": {"url": orthanc.dicomweb_url},
        "destination": {"url": orthanc.dicomweb_url},
    }
    response = httpx.post(f"{url}/v1/analyses", json=body, timeout=600)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes: the service, Orthanc,
    this client), from ``/proc/stat``: everything but idle and I/O wait."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:9]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class BareOnnxRuntime:
    """The peer: the same model on the same prepared tensor, ``session.run`` in this process."""

    def __init__(self, models: Path, phantom: Phantom) -> None:
        manifest = load_manifest(models / "nodule-detector")
        volume = assemble_volume(list(phantom.instances()), manifest.input, manifest.name)
        self.tensor = prepare_input(volume, manifest.input).tensor
        self.session = onnxruntime.InferenceSession(
            str(models / "nodule-detector/model.onnx"), providers=["CPUExecutionProvider"]
        )
        self.run()  # warm-up, as the service's first analysis

    def run(self, count: int = 1) -> float:
        """Seconds for ``count`` back-to-back runs."""
        started = time.perf_counter()
        for _ in range(count):
            self.session.run(None, {"volume": self.tensor})
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--back-to-back", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedgate-bench-inference-"))
    models = bundled_models(work / "models")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{os.getloadavg()[0]:.2f}; phantom {args.size}x{args.size}x{args.slices}, "
        f"{os.cpu_count()} cores, "
        f"onnxruntime {onnxruntime.__version__} "
        f"({', '.join(onnxruntime.get_available_providers())})"
    )
    phantom = make_phantom(args.size, args.slices)
    orthanc = OrthancServer(work / "orthanc").start()
    service = InferenceProcess(
        work / "inference",
        models,
        {"concurrency": {"max_analyses": 2, "max_waiting": 64}, "log": {"level": "warning"}},
    )
    try:
        print(f"stored in Orthanc in {store(orthanc, phantom):.2f} s")
        service.start()
        warm = analyse(service.url, orthanc, phantom)  # first call: imports, caches
        print(f"warm-up analysis: {warm['timings']['total']:.2f} s, {len(warm['lesions'])} lesions")
        bare = BareOnnxRuntime(models, phantom)
        # The machine is shared: interleave the service and its peer, so that load drifts hit
        # both alike, and report medians (stages) and the best of each (throughput).
        runs, bare_runs = [], []
        for _ in range(args.rounds):
            runs.append(analyse(service.url, orthanc, phantom)["timings"])
            bare_runs.append(bare.run())
        medians = {stage: statistics.median(r[stage] for r in runs) for stage in (*STAGES, "total")}
        bare_median = statistics.median(bare_runs)

        print(f"\nstages of one analysis (median of {args.rounds}):")
        for stage in STAGES:
            print(f"  {stage:<12} {medians[stage]:7.2f} s")
        print(f"  {'total':<12} {medians['total']:7.2f} s")
        outside = statistics.median(r["total"] - r["model"] for r in runs)
        print(f"  everything but the model: {outside:.2f} s (median; target < 3 s)")
        print(
            f"bare onnxruntime session.run: {bare_median:.2f} s (median of {args.rounds}); "
            f"service model stage / bare: {medians['model'] / bare_median:.2f}"
        )
        print(f"whole analysis / bare session.run: {medians['total'] / bare_median:.2f}")

        count = args.back_to_back
        service_walls, bare_walls = [], []
        service_cpu, bare_cpu = [], []
        for _ in range(2):
            started, busy = time.perf_counter(), machine_busy_seconds()
            with ThreadPoolExecutor(max_workers=count) as pool:
                results = list(
                    pool.map(lambda _: analyse(service.url, orthanc, phantom), range(count))
                )
            service_walls.append(time.perf_counter() - started)
            service_cpu.append((machine_busy_seconds() - busy) / count)
            assert all(len(r["lesions"]) == len(phantom.truth.lesions) for r in results)
            busy = machine_busy_seconds()
            bare_walls.append(bare.run(count))
            bare_cpu.append((machine_busy_seconds() - busy) / count)
        service_rate = count / min(service_walls)
        bare_rate = count / min(bare_walls)
        print(
            f"\nback to back, {count} analyses sent at once (best of 2): "
            f"{min(service_walls):.2f} s, {service_rate:.3f} analyses/s"
        )
        print(
            f"bare session.run, {count} back to back (best of 2): {min(bare_walls):.2f} s, "
            f"{bare_rate:.3f} runs/s"
        )
        print(
            f"throughput ratio service / bare onnxruntime: {service_rate / bare_rate:.2f} "
            "(target >= 0.90)"
        )
        # What the cores allow: however well the stages overlap, N cores cannot finish
        # analyses faster than N / (CPU seconds one analysis costs the machine).
        cores = os.cpu_count() or 1
        per_analysis, per_run = statistics.median(service_cpu), statistics.median(bare_cpu)
        ceiling = min(1.0, cores / per_analysis / bare_rate)
        print(
            f"machine CPU per analysis (service, Orthanc, client): {per_analysis:.2f} core-s; "
            f"per bare run: {per_run:.2f} core-s; ceiling on {cores} cores: "
            f"{ceiling:.2f} of bare onnxruntime"
        )
        assert service.process is not None
        print(f"service peak RSS: {peak_rss_mb(service.process.pid):.0f} MB")
        lesions = warm["lesions"]
        truth = sorted(phantom.truth.lesions, key=lambda lesion: -lesion.diameter_mm)
        errors = [
            f"{t.diameter_mm:.0f} mm: "
            f"{100 * (found['diameter_mm'] / t.diameter_mm - 1):+.1f} % diameter, "
            f"{100 * (found['volume_mm3'] / t.volume_mm3 - 1):+.1f} % volume"
            for found, t in zip(lesions, truth, strict=True)
        ]
        print("accuracy: " + "; ".join(errors))
    finally:
        service.stop()
        orthanc.stop()


if __name__ == "__main__":
    main()
