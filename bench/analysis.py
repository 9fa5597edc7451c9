"""A federated analysis's backfill of studies held by Orthanc, and clinical work beside it.

    .venv/bin/python -m bench.analysis [--studies 1000] [--clinical 5] [--slices 8] [--size 32]

Starts Orthanc (the PACS), ``fedgate inference`` (bundled models, model installation on) and a
gateway in front of Orthanc whose clinical rule routes chest CTs to ``nodule-detector``, with
the research lane's default throttle (one research job at a time). Stores ``--studies`` phantom
studies in Orthanc, has the gateway's index learn them (``fedgate index sync``), then:

1. idle: sends ``--clinical`` chest CTs to the gateway one after the other and records each
   one's latency from "stable" (the job's creation) to "SR stored" (the job's end);
2. approves an analysis of every study (the bundled ``nodule-presence`` model as the
   consortium's bundle); the gateway installs it, selects the cohort from Orthanc by QIDO-RS
   and backfills;
3. during the backfill: sends ``--clinical`` other chest CTs the same way;
4. waits for the backfill to end;
5. idle again: ``--clinical`` more chest CTs, so that a machine whose load drifts (other work
   on it) shows in the two idle figures rather than in the ratio.

Reported: the gateway's own time per study (selection: cohort, QIDO-RS, routing and enqueueing,
per study; and per job, dispatch and result handling: the attempt's duration minus the
inference service's own stages), backfill throughput, and clinical latency idle vs during the
backfill. Targets (issue 17): own time under 50 ms per study; clinical latency within 20 %.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.pipeline import STAGES, percentile, send, studies
from tests.support.analysis import SiteAnalysis
from tests.support.gateway import GatewayProcess
from tests.support.inference import REPO_ROOT, bundled_models, installing_inference
from tests.support.orthanc import OrthancServer
from tests.support.waiting import wait_until

INSTALL_TOKEN = "bench-install-token"
BUNDLE_MODEL = "nodule-presence"


def all_jobs(gateway: GatewayProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = httpx.get(
            gateway.url + "/jobs", params={"limit": "1000", "offset": str(len(found))}, timeout=60
        ).json()
        found.extend(page["jobs"])
        if len(found) >= page["total"] or not page["jobs"]:
            return found


def _finished(gateway: GatewayProcess, study_uid: str) -> dict[str, Any] | None:
    """The study's job once it has ended."""
    response = httpx.get(gateway.url + "/jobs", params={"study": study_uid}, timeout=30)
    jobs = response.json()["jobs"]
    return jobs[0] if jobs and jobs[0]["state"] in ("succeeded", "failed", "dead") else None


def clinical_latencies(
    gateway: GatewayProcess, bodies: list[tuple[str, str, bytes]]
) -> list[float]:
    """Each study sent after the previous one's result: stable -> SR stored, in seconds."""
    latencies = []
    for study_uid, _, body in bodies:
        send(gateway.dicomweb_url, [(study_uid, "", body)])
        job = wait_until(
            functools.partial(_finished, gateway, study_uid),
            300,
            f"the clinical result of {study_uid}",
            step=0.05,
        )
        if job["state"] != "succeeded":
            raise RuntimeError(f"clinical job failed: {job}")
        latencies.append(job["finished_at"] - job["created_at"])
    return latencies


def run(
    count: int, clinical: int, slices: int, size: int, work: Path, quiet: bool = False
) -> dict[str, Any]:
    """Run the benchmark in ``work``; returns its measures (see the module)."""
    backfill = studies(count, slices, size, first_seed=70_000)
    idle_bodies = studies(clinical, slices, size, first_seed=80_000)
    busy_bodies = studies(clinical, slices, size, first_seed=90_000)
    after_bodies = studies(clinical, slices, size, first_seed=100_000)
    models = bundled_models(work / "models")
    inference = installing_inference(work / "inference", models, INSTALL_TOKEN).start()
    orthanc = OrthancServer(work / "orthanc").start()
    gateway = GatewayProcess(
        work / "gateway",
        {
            "pacs": {"url": orthanc.dicomweb_url},
            "pipeline": {
                "stable_after_seconds": 1,
                "workers": 2,
                "research": {"install_token": INSTALL_TOKEN, "poll_seconds": 0.5},
            },
            "routing": [
                {
                    "name": "chest-ct",
                    "match": {"Modality": "CT", "BodyPartExamined": "CHEST"},
                    "models": ["nodule-detector"],
                    "inference_url": inference.url,
                }
            ],
            "log": {"level": "warning"},
        },
    ).start()
    try:
        send(orthanc.dicomweb_url, backfill)
        started = time.perf_counter()
        config = str(gateway.workdir / "gateway.yaml")
        subprocess.run(
            [sys.executable, "-m", "fedgate", "index", "sync", "--quiet", "--config", config],
            cwd=REPO_ROOT,
            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
        )
        sync_seconds = time.perf_counter() - started

        idle = clinical_latencies(gateway, idle_bodies)

        analysis = SiteAnalysis(gateway, models / BUNDLE_MODEL, cohort={})
        approved = time.time()
        analysis.approve()
        selected = analysis.wait_selected(count, timeout=600)
        selection_seconds = time.time() - approved
        busy = clinical_latencies(gateway, busy_bodies)
        during = analysis.progress()

        def backfill_done() -> bool:
            if not quiet:
                progress = analysis.progress()
                print(f"\rbackfill: {progress.done}/{count}", end="", flush=True)
            return analysis.get().state == "done"

        wait_until(backfill_done, 7200, "the backfill to end", step=1.0)
        if not quiet:
            print()
        after = clinical_latencies(gateway, after_bodies)
        research = [j for j in all_jobs(gateway) if j["analysis_id"] == analysis.analysis_id]
    finally:
        gateway.stop()
        orthanc.stop()
        inference.stop()
    succeeded = [j for j in research if j["state"] == "succeeded"]
    own = [
        (j["finished_at"] - j["started_at"]) - sum(j["timings"].get(stage, 0.0) for stage in STAGES)
        for j in succeeded
    ]
    span = max(j["finished_at"] for j in research) - min(j["started_at"] for j in research)
    return {
        "studies": count,
        "selected": selected.selected,
        "succeeded": len(succeeded),
        "index_sync_seconds": sync_seconds,
        "selection_seconds": selection_seconds,
        # Installing the model is part of it (done before selecting).
        "selection_ms_per_study": selection_seconds / count * 1000,
        "own_ms_median": statistics.median(own) * 1000,
        "own_ms_p95": percentile(own, 0.95) * 1000,
        "backfill_studies_per_min": len(succeeded) / span * 60,
        "clinical_idle_s": idle,
        "clinical_during_s": busy,
        "clinical_after_s": after,
        # Before and after the backfill together: the idle gateway's latency.
        "clinical_idle_median_s": statistics.median(idle + after),
        "clinical_during_median_s": statistics.median(busy),
        "research_queued_when_clinical_done": during.queued,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--clinical", type=int, default=5)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-analysis-") as work:
        result = run(args.studies, args.clinical, args.slices, args.size, Path(work))
    own_per_study = result["selection_ms_per_study"] + result["own_ms_median"]
    ratio = result["clinical_during_median_s"] / result["clinical_idle_median_s"]
    print(
        f"\n{result['succeeded']}/{result['studies']} research jobs succeeded; "
        f"{args.slices} slices of {args.size}x{args.size} each"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| index sync of the PACS's studies | {result['index_sync_seconds']:.1f} s |")
    print(
        f"| install + select (cohort, QIDO-RS, routing, enqueue) | "
        f"{result['selection_seconds']:.1f} s, {result['selection_ms_per_study']:.1f} ms/study |"
    )
    print(f"| own time per research job, median | {result['own_ms_median']:.0f} ms |")
    print(f"| own time per research job, p95 | {result['own_ms_p95']:.0f} ms |")
    print(f"| **gateway's own time per study** (selection + median job) | {own_per_study:.0f} ms |")
    print(f"| backfill throughput | {result['backfill_studies_per_min']:.1f} studies/min |")
    print(
        f"| clinical latency idle (before and after), median (n={2 * args.clinical}) | "
        f"{result['clinical_idle_median_s']:.2f} s |"
    )
    print(
        f"| clinical latency during the backfill, median | "
        f"{result['clinical_during_median_s']:.2f} s |"
    )
    print(f"| **ratio during / idle** (target <= 1.20) | {ratio:.2f} |")
    print(
        f"| research jobs still queued after the last clinical result | "
        f"{result['research_queued_when_clinical_done']} |"
    )
    print(f"idle before: {[round(s, 2) for s in result['clinical_idle_s']]}")
    print(f"idle after: {[round(s, 2) for s in result['clinical_after_s']]}")
    print(f"during: {[round(s, 2) for s in result['clinical_during_s']]}")


if __name__ == "__main__":
    main()
