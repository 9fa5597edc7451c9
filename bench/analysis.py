"""A federated analysis's backfill of studies held by Orthanc, and clinical work beside it.

    .venv/bin/python -m bench.analysis [--studies 1000] [--clinical 5] [--slices 8] [--size 32]
        [--research-service]

Starts Orthanc (the PACS), ``fedgate inference`` (bundled models, model installation on) and a
gateway in front of Orthanc whose clinical rule routes chest CTs to ``nodule-detector``, with
the research lane's default throttle (one research job at a time). Stores ``--studies`` phantom
studies in Orthanc, has the gateway's index learn them (``fedgate index sync``), then:

0. warm-up: one chest CT (the models' first run), not counted;
1. idle: sends ``--clinical`` chest CTs to the gateway one after the other and records each
   one's latency from "stable" (the job's creation) to "SR stored" (the job's end);
2. approves an analysis of every study (the bundled ``nodule-presence`` model as the
   consortium's bundle); the gateway installs it, selects the cohort from Orthanc by QIDO-RS
   and backfills;
3. during the backfill, ``--clinical`` times: the analysis paused (its running job ended) and
   a chest CT with the gateway idle, then resumed and another chest CT while a research job
   runs. The pairs are measured under the same load, so a machine whose load drifts (other
   work on it) shows in both figures of a pair rather than in their ratio;
4. waits for the backfill to end.

With ``--research-service`` the analysis's model is installed on and run by a second
inference service started under ``nice -n 19`` (``pipeline.research.inference_url``), as
docs/analysis.md advises where cores are few.

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
from gateway.analysis.records import Progress
from tests.support.analysis import SiteAnalysis
from tests.support.gateway import GatewayProcess
from tests.support.inference import (
    REPO_ROOT,
    InferenceProcess,
    bundled_models,
    installing_inference,
)
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


def _median_stages(stages: list[dict[str, float]]) -> dict[str, float]:
    names = sorted({name for stage in stages for name in stage})
    return {name: statistics.median(stage.get(name, 0.0) for stage in stages) for name in names}


def _running_or_over(analysis: SiteAnalysis) -> Progress | None:
    """The analysis's progress once a research job runs or none is left to run."""
    progress = analysis.progress()
    return progress if progress.running or not progress.queued else None


def clinical_latencies(
    gateway: GatewayProcess,
    bodies: list[tuple[str, str, bytes]],
    stages: list[dict[str, float]] | None = None,
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
        if stages is not None:
            stages.append({**job["timings"], "wait": job["started_at"] - job["created_at"]})
    return latencies


class NicedInference(InferenceProcess):
    """An inference service started under ``nice -n 19``: research work's own service."""

    def command(self, config_path: Path) -> list[str]:
        return ["nice", "-n", "19", *super().command(config_path)]


def run(
    count: int,
    clinical: int,
    slices: int,
    size: int,
    work: Path,
    quiet: bool = False,
    research_service: bool = False,
) -> dict[str, Any]:
    """Run the benchmark in ``work``; returns its measures (see the module).

    ``research_service``: research analyses go to a second inference service of their own,
    started under ``nice -n 19`` (``pipeline.research.inference_url``).
    """
    backfill = studies(count, slices, size, first_seed=70_000)
    idle_bodies = studies(clinical, slices, size, first_seed=80_000)
    busy_bodies = studies(clinical, slices, size, first_seed=90_000)
    paused_bodies = studies(clinical, slices, size, first_seed=100_000)
    warm_up = studies(1, slices, size, first_seed=79_000)
    models = bundled_models(work / "models")
    inference = installing_inference(work / "inference", models, INSTALL_TOKEN).start()
    research_inference = inference
    if research_service:
        shared = installing_inference(work / "research", models, INSTALL_TOKEN)
        research_inference = NicedInference(shared.workdir, shared.models_dir, shared.settings)
        research_inference.start()
    orthanc = OrthancServer(work / "orthanc").start()
    gateway = GatewayProcess(
        work / "gateway",
        {
            "pacs": {"url": orthanc.dicomweb_url},
            "pipeline": {
                "stable_after_seconds": 1,
                "workers": 2,
                "research": {
                    "install_token": INSTALL_TOKEN,
                    "poll_seconds": 0.5,
                    "inference_url": research_inference.url,
                },
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

        clinical_latencies(gateway, warm_up)
        idle = clinical_latencies(gateway, idle_bodies)

        analysis = SiteAnalysis(gateway, models / BUNDLE_MODEL, cohort={})
        approved = time.time()
        analysis.approve()
        selected = analysis.wait_selected(count, timeout=600)
        selection_seconds = time.time() - approved
        busy: list[float] = []
        paused: list[float] = []
        busy_stages: list[dict[str, float]] = []
        paused_stages: list[dict[str, float]] = []
        too_few = "the backfill ended before the measurements: more --studies"
        for busy_body, paused_body in zip(busy_bodies, paused_bodies, strict=True):
            # Paused first: the pause is asked while jobs are certainly left (a small backfill
            # of tiny studies can end within one clinical study's latency).
            try:
                analysis.set_state("paused")
            except ValueError:  # done meanwhile
                raise RuntimeError(too_few) from None
            wait_until(lambda: not analysis.progress().running, 120, "the research job to end")
            paused += clinical_latencies(gateway, [paused_body], paused_stages)
            analysis.set_state("running")
            progress = wait_until(
                functools.partial(_running_or_over, analysis), 120, "a research job", step=0.05
            )
            if not progress.running:
                raise RuntimeError(too_few)
            busy += clinical_latencies(gateway, [busy_body], busy_stages)
        during = analysis.progress()
        resumed_at = time.time()

        def backfill_done() -> bool:
            if not quiet:
                progress = analysis.progress()
                print(f"\rbackfill: {progress.done}/{count}", end="", flush=True)
            return analysis.get().state == "done"

        wait_until(backfill_done, 7200, "the backfill to end", step=1.0)
        if not quiet:
            print()
        research = [j for j in all_jobs(gateway) if j["analysis_id"] == analysis.analysis_id]
    finally:
        gateway.stop()
        orthanc.stop()
        inference.stop()
        if research_inference is not inference:
            research_inference.stop()
    succeeded = [j for j in research if j["state"] == "succeeded"]
    own = [
        (j["finished_at"] - j["started_at"]) - sum(j["timings"].get(stage, 0.0) for stage in STAGES)
        for j in succeeded
    ]
    # Throughput after the paired measurements: no pauses and no clinical work in it.
    unpaused = [j for j in succeeded if j["started_at"] >= resumed_at] or succeeded
    span = max(j["finished_at"] for j in unpaused) - min(j["started_at"] for j in unpaused)
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
        "backfill_studies_per_min": len(unpaused) / span * 60,
        "clinical_idle_s": idle,
        "clinical_during_s": busy,
        "clinical_paused_s": paused,
        # Before the analysis and while it was paused: the idle gateway's latency.
        "clinical_idle_median_s": statistics.median(idle + paused),
        "clinical_during_median_s": statistics.median(busy),
        "clinical_pair_ratio_median": statistics.median(
            b / p for b, p in zip(busy, paused, strict=True)
        ),
        "research_queued_when_clinical_done": during.queued,
        # Where a clinical job's time goes, median per stage (the inference service's stages,
        # and "wait": from the job's creation to its claim), during the backfill and paused.
        "clinical_stages_during_s": _median_stages(busy_stages),
        "clinical_stages_paused_s": _median_stages(paused_stages),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--clinical", type=int, default=5)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--research-service",
        action="store_true",
        help="research analyses on a second inference service under nice -n 19",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-analysis-") as work:
        result = run(
            args.studies,
            args.clinical,
            args.slices,
            args.size,
            Path(work),
            research_service=args.research_service,
        )
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
        f"| clinical latency idle (before the analysis and paused), median "
        f"(n={2 * args.clinical}) | {result['clinical_idle_median_s']:.2f} s |"
    )
    print(
        f"| clinical latency during the backfill, median (n={args.clinical}) | "
        f"{result['clinical_during_median_s']:.2f} s |"
    )
    print(
        f"| ratio of each pair (during / paused just before), median | "
        f"{result['clinical_pair_ratio_median']:.2f} |"
    )
    print(f"| **ratio during / idle** (target <= 1.20) | {ratio:.2f} |")
    print(
        f"| research jobs still queued after the last clinical result | "
        f"{result['research_queued_when_clinical_done']} |"
    )
    print(f"idle before: {[round(s, 2) for s in result['clinical_idle_s']]}")
    print(f"paused: {[round(s, 2) for s in result['clinical_paused_s']]}")
    for phase in ("during", "paused"):
        stages = result[f"clinical_stages_{phase}_s"]
        print(f"clinical stages {phase}: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    print(f"during: {[round(s, 2) for s in result['clinical_during_s']]}")


if __name__ == "__main__":
    main()
