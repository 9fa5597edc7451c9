"""Two gateway replicas on one real PostgreSQL queue: every study analysed exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.pipeline.conftest import (
    chest_phantom,
    finished_jobs,
    jobs,
    pipeline_settings,
    wait_until,
)
from tests.pipeline.test_orthanc import Site
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.orthanc


def test_two_replicas_share_one_queue_and_run_each_study_once(
    tmp_path: Path, inference: InferenceProcess, postgres: PostgresServer
) -> None:
    queue = {"url": postgres.url, "lease_seconds": 10}
    site = Site(tmp_path / "a", inference.url, queue=queue)  # Orthanc forwards to replica A
    replica_b = GatewayProcess(
        tmp_path / "b",
        pipeline_settings(
            inference.url, queue=queue, pacs={"url": site.orthanc.dicomweb_url, "retries": 1}
        ),
    )
    site.start()
    replica_b.start()
    try:
        phantoms = [
            chest_phantom(
                seed=900 + i,
                rows=64,
                columns=64,
                slices=16,
                pixel_spacing_mm=4.0,
                slice_thickness_mm=5.0,
            )
            for i in range(20)
        ]
        to_b = DICOMwebClient(replica_b.dicomweb_url)
        for index, phantom in enumerate(phantoms):
            if index % 2:
                site.storescu(phantom, tmp_path / "files")  # a modality -> Orthanc -> replica A
            else:
                to_b.store_instances(list(phantom.instances()))  # a modality -> replica B

        finished = wait_until(lambda: finished_jobs(site.gateway, 20), 240, "20 finished jobs")
        assert len(finished) == 20
        assert {j["state"] for j in finished} == {"succeeded"}
        assert Counter(j["study_instance_uid"] for j in finished) == Counter(
            {p.truth.study_instance_uid: 1 for p in phantoms}
        )
        # Both replicas worked, and no job ran twice.
        histories = [
            httpx.get(f"{site.gateway.url}/jobs/{job['id']}").json()["history"] for job in finished
        ]
        assert all(len(history) == 1 for history in histories)
        workers = Counter(history[0]["worker"].split(":")[1] for history in histories)
        assert len(workers) == 2, workers
        assert jobs(replica_b) == jobs(site.gateway)  # one queue seen from both

        for phantom in phantoms:
            study = phantom.truth.study_instance_uid
            found = wait_until(lambda s=study: site.results_in_pacs(s), 60, "results in Orthanc")
            assert len(found["SR"]) == 1
    finally:
        replica_b.stop()
        site.stop()
