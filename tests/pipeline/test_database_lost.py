"""A gateway whose PostgreSQL (index and queue) goes away while it runs, and comes back: a
restart on the same port, and separately its sessions ended by ``pg_terminate_backend``.

While the database is away ``/readyz`` answers 503 naming it (``/healthz`` stays 200: a
restart would not bring the database back) and a STOW is refused with 503 and the reason,
nothing stored: the sender keeps the study and sends it again. Once the database is back the
gateway is ready within seconds, without a restart, and a new study is stored, indexed and
analysed. What a modality's C-STORE delivered while it was away (acknowledged: DIMSE has no
"try later" a modality acts on) is indexed and analysed once it is back, without a resend.
Real processes: the gateway, the inference service, a PostgreSQL server, DCMTK's storescu.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from prometheus_client.parser import text_string_to_metric_families
from requests import HTTPError

from tests.pipeline.conftest import chest_phantom, jobs, pipeline_settings, wait_until
from tests.support.dicom import part10_bytes
from tests.support.dimse import storescu
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.process import run_fedgate

#: /readyz follows the database within its cache (2 s) and a probe's timeout (2 s).
READY_AGAIN_SECONDS = 10.0


def _indexed_studies(gateway: GatewayProcess) -> int:
    """What ``fedgate index show`` reports, from the gateway's own settings file."""
    shown = run_fedgate(
        "index", "show", "--config", str(gateway.workdir / "gateway.yaml"), timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if line.strip().startswith("studies:")]
    return int(line.split(":")[1])


def _study_analysed(gateway: GatewayProcess, study_uid: str) -> bool:
    found = jobs(gateway, study=study_uid)
    return bool(found) and all(job["state"] == "succeeded" for job in found)


def _store_and_follow(gateway: GatewayProcess, seed: int, studies_before: int) -> None:
    """A STOW is stored, indexed (one more study) and analysed (its job succeeds)."""
    phantom = chest_phantom(seed=seed, rows=64, columns=64, slices=8)
    DICOMwebClient(gateway.dicomweb_url).store_instances(list(phantom.instances()))
    study = phantom.truth.study_instance_uid
    wait_until(lambda: _indexed_studies(gateway) == studies_before + 1, 30, "study indexed")
    wait_until(lambda: _study_analysed(gateway, study), 120, f"study {study} analysed")


@pytest.mark.parametrize("loss", ["restart", "terminate_backends"])
def test_the_gateway_rides_out_its_database_going_away(
    tmp_path: Path, inference: InferenceProcess, loss: str
) -> None:
    postgres = PostgresServer(port=free_port()).start()
    gateway = GatewayProcess(
        tmp_path / "gateway",
        pipeline_settings(inference.url, index={"url": postgres.url}, queue={"url": postgres.url}),
    )
    try:
        gateway.start(timeout=60)
        _store_and_follow(gateway, seed=810, studies_before=0)

        if loss == "restart":
            postgres.halt()
            # Away: not ready, naming the database; alive.
            ready = wait_until(
                lambda: (
                    (r := httpx.get(gateway.url + "/readyz", timeout=10)).status_code == 503 and r
                ),
                READY_AGAIN_SECONDS,
                "/readyz 503",
            )
            body = ready.json()
            assert body["status"] == "unready"
            assert "index.url, queue.url" in body["database"]
            assert f"127.0.0.1:{postgres.port}/fedgate" in body["database"]
            assert "connection refused" in body["database"]
            assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
            # A STOW now is refused, clearly, and nothing of it is kept.
            refused = chest_phantom(seed=811, rows=64, columns=64, slices=8)
            sender = DICOMwebClient(gateway.dicomweb_url)
            sender.set_http_retry_params(retry=False)  # a 503 is retried by default
            with pytest.raises(HTTPError) as failure:
                sender.store_instances(list(refused.instances()))
            response = failure.value.response
            assert response.status_code == 503
            assert response.headers["Retry-After"].isdigit()
            assert "database does not answer" in response.text
            assert "nothing was stored" in response.text
            assert "Traceback" not in response.text
            studies = httpx.get(gateway.dicomweb_url + "/studies", timeout=10).json()
            assert refused.truth.study_instance_uid not in str(studies)
            # A request that needs the queue: 503 with the reason, not a 500.
            listing = httpx.get(gateway.url + "/jobs", timeout=10)
            assert listing.status_code == 503, listing.text
            assert "queue.url" in listing.json()["database"]
            assert listing.headers["Retry-After"].isdigit()
            postgres.start()  # the same cluster, on the same port
        else:
            assert postgres.terminate_backends() >= 2  # the index's and the queue's, at least
        # Back: ready again within seconds, without a restart of the gateway.
        back = time.monotonic()
        wait_until(
            lambda: httpx.get(gateway.url + "/readyz", timeout=10).status_code == 200,
            READY_AGAIN_SECONDS,
            "/readyz 200 again",
        )
        assert time.monotonic() - back < READY_AGAIN_SECONDS
        _store_and_follow(gateway, seed=812, studies_before=1)
    finally:
        gateway.stop()
        postgres.stop()


def _unobserved(gateway: GatewayProcess) -> float:
    """``fedgate_store_unobserved_instances`` from the gateway's /metrics."""
    scrape = httpx.get(gateway.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == "fedgate_store_unobserved_instances":
                return sample.value
    raise AssertionError("fedgate_store_unobserved_instances not in /metrics")


def test_what_a_modality_sent_while_the_database_was_away_is_analysed_when_it_is_back(
    tmp_path: Path, inference: InferenceProcess
) -> None:
    postgres = PostgresServer(port=free_port()).start()
    dimse_port = free_port()
    gateway = GatewayProcess(
        tmp_path / "gateway",
        pipeline_settings(
            inference.url,
            index={"url": postgres.url},
            queue={"url": postgres.url},
            dimse={"enabled": True, "port": dimse_port, "ae_title": "FEDGATE"},
        ),
    )
    try:
        gateway.start(timeout=60)
        postgres.halt()
        wait_until(
            lambda: httpx.get(gateway.url + "/readyz", timeout=10).status_code == 503,
            READY_AGAIN_SECONDS,
            "/readyz 503",
        )
        phantom = chest_phantom(seed=813, rows=64, columns=64, slices=8)
        files = []
        for number, dataset in enumerate(phantom.instances()):
            files.append(tmp_path / f"slice{number}.dcm")
            files[-1].write_bytes(part10_bytes(dataset))
        sent = storescu(dimse_port, "CT-SCANNER", *files)
        assert sent.returncode == 0, sent.stdout + sent.stderr  # every C-STORE: Success
        # Stored, and waiting for the database: the index and the stability ledger missed them.
        assert _unobserved(gateway) == len(files)
        assert '"store.observer_failed"' in gateway.log()
        postgres.start()
        study = phantom.truth.study_instance_uid
        wait_until(lambda: _indexed_studies(gateway) == 1, 60, "study indexed")
        wait_until(lambda: _study_analysed(gateway, study), 120, f"study {study} analysed")
        assert _unobserved(gateway) == 0
    finally:
        gateway.stop()
        postgres.stop()
