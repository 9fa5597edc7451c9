"""``fedgate demo``: the whole pipeline on the embedded store, on one machine, no PACS needed.

Starts an inference service with the bundled models and a gateway routing chest CTs to them,
sends a handful of synthetic chest CT studies in as a PACS would (STOW-RS), waits for the
results, prints them, and keeps serving so that a viewer can be pointed at the gateway's
DICOMweb root (``--once`` stops after the table).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from fedgate.phantom import PhantomSpec, generate_phantom

# (lesion diameters in mm) per demo study: a mix of sizes and one negative study.
_STUDIES: list[tuple[float, ...]] = [(12.0,), (8.0, 20.0), (), (15.0,), (6.0,), (10.0, 25.0)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("fedgate-demo"),
        help="where the demo keeps its store, queue and models",
    )
    parser.add_argument("--studies", type=int, default=4, help="phantom studies to send (1-6)")
    parser.add_argument("--port", type=int, default=8080, help="the gateway's port")
    parser.add_argument("--inference-port", type=int, default=8081)
    parser.add_argument("--once", action="store_true", help="exit after printing the results")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for results")


class _Service:
    def __init__(self, name: str, command: list[str], log_path: Path, health_url: str):
        self.name = name
        self.command = command
        self.log_path = log_path
        self.health_url = health_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                if httpx.get(self.health_url, timeout=2).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def _say(text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.studies <= len(_STUDIES):
        _say(f"fedgate demo: --studies must be 1 to {len(_STUDIES)}")
        return 2
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    models = data_dir / "models"
    python = [sys.executable, "-m", "fedgate"]
    if not (models / "nodule-detector" / "model.onnx").is_file():
        _say(f"building the bundled models into {models} ...")
        subprocess.run([*python, "models", "build", "--out", str(models)], check=True)

    inference_url = f"http://127.0.0.1:{args.inference_port}"
    gateway_url = f"http://127.0.0.1:{args.port}"
    inference_config = data_dir / "inference.yaml"
    inference_config.write_text(yaml.safe_dump({"listen": {"port": args.inference_port}}))
    gateway_config = data_dir / "gateway.yaml"
    gateway_config.write_text(yaml.safe_dump(_gateway_settings(data_dir, args.port, inference_url)))

    inference = _Service(
        "the inference service",
        [*python, "inference", "--models", str(models), "--config", str(inference_config)],
        data_dir / "inference.log",
        inference_url + "/v2/health/ready",
    )
    gateway = _Service(
        "the gateway",
        [*python, "gateway", "--config", str(gateway_config)],
        data_dir / "gateway.log",
        gateway_url + "/healthz",
    )
    try:
        _say("starting the inference service and the gateway ...")
        inference.start()
        gateway.start()
        _say(f"  gateway   {gateway_url}  (DICOMweb at {gateway_url}/dicomweb)")
        _say(f"  dashboard {gateway_url}/ui/  (the cohort builder over this site's findings)")
        _say(f"  inference {inference_url}  (Open Inference Protocol at {inference_url}/v2)")
        study_uids = _send_studies(gateway_url, args.studies)
        jobs = _wait_for_jobs(gateway_url, study_uids, args.timeout)
        if jobs is None:
            _say(f"timed out; see {gateway.log_path} and {inference.log_path}")
            return 1
        _print_table(gateway_url, jobs)
        _print_federated_count(gateway_url)
        failed = [job for job in jobs if job["state"] != "succeeded"]
        if args.once:
            return 1 if failed else 0
        _say(
            f"\nserving; point a DICOMweb viewer at {gateway_url}/dicomweb and a browser at "
            f"{gateway_url}/ui/ for the cohort dashboard (Ctrl-C to stop)"
        )
        while gateway.process and gateway.process.poll() is None:
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        gateway.stop()
        inference.stop()


def _gateway_settings(data_dir: Path, port: int, inference_url: str) -> dict[str, Any]:
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "data_dir": str(data_dir / "gateway"),
        "pipeline": {"stable_after_seconds": 2},
        "routing": [
            {
                "name": "chest-ct",
                "match": {"Modality": "CT", "BodyPartExamined": "CHEST"},
                "min_instances": 8,
                "models": ["nodule-detector", "nodule-presence"],
                "inference_url": inference_url,
            }
        ],
    }


def _send_studies(gateway_url: str, count: int) -> list[str]:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(gateway_url + "/dicomweb")
    uids = []
    for index, lesions in enumerate(_STUDIES[:count]):
        phantom = generate_phantom(
            PhantomSpec(
                seed=1000 + index,
                rows=192,
                columns=192,
                slices=64,
                pixel_spacing_mm=1.0,
                slice_thickness_mm=1.5,
                lesion_diameters_mm=lesions,
            )
        )
        client.store_instances(list(phantom.instances()))
        uids.append(phantom.truth.study_instance_uid)
        shown = ", ".join(f"{d:g} mm" for d in lesions) or "no lesion"
        _say(f"sent study {index + 1}/{count} ({phantom.spec.slices} CT slices; {shown})")
    return uids


def _wait_for_jobs(
    gateway_url: str, study_uids: list[str], timeout: float
) -> list[dict[str, Any]] | None:
    expected = 2 * len(study_uids)  # two models per study
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        jobs = httpx.get(gateway_url + "/jobs", params={"limit": "1000"}, timeout=10).json()["jobs"]
        ours = [job for job in jobs if job["study_instance_uid"] in study_uids]
        done = [job for job in ours if job["state"] in ("succeeded", "failed", "dead")]
        if len(done) != last:
            _say(f"analyses finished: {len(done)}/{expected}")
            last = len(done)
        if len(done) >= expected:
            return ours
        time.sleep(1)
    return None


def _print_table(gateway_url: str, jobs: list[dict[str, Any]]) -> None:
    _say("\n| study | series | model | state | findings | SR |")
    _say("|---|---|---|---|---|---|")
    for job in sorted(jobs, key=lambda j: (j["study_instance_uid"], j["model"])):
        detail = httpx.get(f"{gateway_url}/jobs/{job['id']}", timeout=10).json()
        _say(
            f"| ...{job['study_instance_uid'][-8:]} | ...{job['series_instance_uid'][-8:]} | "
            f"{job['model']} | {job['state']} | {_describe_findings(detail)} | "
            f"{job['sr_sop_instance_uid'] or '-'} |"
        )


def _describe_findings(job: dict[str, Any]) -> str:
    """'Nodule: Diameter 12.1 mm, Volume 905 mm3; ...' or the error of a failed job."""
    if job["state"] != "succeeded":
        return (job.get("last_error") or "")[:60]
    if not job.get("findings"):
        return "no finding"
    described = []
    for finding in job["findings"]:
        parts = [
            f"{m['name']['meaning']} {m['value']:.1f} {m['unit']['value']}"
            for m in finding.get("measurements", [])
        ]
        parts += [
            f"{q['name']['meaning']}: {q['value']['meaning']}"
            for q in finding.get("qualitative_evaluations", [])
        ]
        if finding.get("probability") is not None:
            parts.append(f"p={finding['probability']:.2f}")
        described.append(f"{finding['finding_type']['meaning']}: " + ", ".join(parts))
    return "; ".join(described)


def _print_federated_count(gateway_url: str) -> None:
    """The first federated question, once the gateway answers it (issue 6)."""
    try:
        response = httpx.get(
            gateway_url + "/federated/v1/count",
            # finding= counts nodules that are there: nodule-presence's "Nodule: Absent" of
            # the lesion-free study is not one (docs/federated.md, "Absent is not a finding").
            params={"level": "patients", "finding": "SCT:27925004"},
            timeout=10,
        )
    except httpx.HTTPError:
        return
    if response.status_code == 200:
        answer = response.json()
        count = answer.get("count")
        shown = count if count is not None else f"suppressed ({answer.get('bound', '<10')})"
        if "interval" in answer:  # a noisy answer (the analysts' default): say how noisy
            low, high = answer["interval"]
            epsilon = answer.get("privacy", {}).get("epsilon", 0)
            shown = (
                f"{count} (differentially private: 95 % interval {low}-{high}, epsilon {epsilon})"
            )
        _say(f"\nfederated: patients with a nodule (SCT 27925004): {shown}")
