"""The gateway in front of a real Orthanc: pass-through, forwarding, and upstream failures."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.gateway.conftest import phantom
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port

pytestmark = pytest.mark.orthanc

ORTHANC_USER, ORTHANC_PASSWORD = "fedgate", "s3cret"


@pytest.fixture(scope="module")
def secured_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """Orthanc with HTTP basic authentication, as a hospital would run it."""
    server = OrthancServer(
        tmp_path_factory.mktemp("orthanc"),
        overrides={
            "AuthenticationEnabled": True,
            "RegisteredUsers": {ORTHANC_USER: ORTHANC_PASSWORD},
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def orthanc_client(secured_orthanc: OrthancServer) -> DICOMwebClient:
    session = requests.Session()
    session.auth = (ORTHANC_USER, ORTHANC_PASSWORD)
    return DICOMwebClient(secured_orthanc.dicomweb_url, session=session)


@pytest.fixture(scope="module")
def fronted(
    tmp_path_factory: pytest.TempPathFactory, secured_orthanc: OrthancServer
) -> Iterator[GatewayProcess]:
    """A gateway whose QIDO/WADO come from the secured Orthanc."""
    process = GatewayProcess(
        tmp_path_factory.mktemp("fronted"),
        {
            "pacs": {
                "url": secured_orthanc.dicomweb_url,
                "auth": {"type": "basic", "username": ORTHANC_USER, "password": ORTHANC_PASSWORD},
            }
        },
    ).start()
    try:
        yield process
    finally:
        process.stop()


def test_qido_and_wado_come_from_the_pacs(
    fronted: GatewayProcess, orthanc_client: DICOMwebClient, secured_orthanc: OrthancServer
) -> None:
    study = phantom(seed=400, slices=3)
    orthanc_client.store_instances(list(study.instances()))
    truth = study.truth
    client = DICOMwebClient(fronted.dicomweb_url)

    studies = client.search_for_studies(search_filters={"PatientID": truth.patient_id})
    assert [s["0020000D"]["Value"][0] for s in studies] == [truth.study_instance_uid]
    # URLs in the answer point at the gateway, never at the PACS behind it.
    retrieve_url = studies[0]["00081190"]["Value"][0]
    assert retrieve_url.startswith(fronted.dicomweb_url)
    assert secured_orthanc.url not in retrieve_url

    sent = {ds.SOPInstanceUID: ds for ds in study.instances()}
    for dataset in client.retrieve_series(truth.study_instance_uid, truth.series_instance_uid):
        assert dataset.PixelData == sent[dataset.SOPInstanceUID].PixelData
    metadata = client.retrieve_series_metadata(truth.study_instance_uid, truth.series_instance_uid)
    assert len(metadata) == 3


def test_stow_lands_in_the_embedded_store_not_the_pacs(
    fronted: GatewayProcess, orthanc_client: DICOMwebClient
) -> None:
    dataset = next(phantom(seed=401).instances())
    response = DICOMwebClient(fronted.dicomweb_url).store_instances([dataset])
    assert len(response.ReferencedSOPSequence) == 1
    assert (fronted.data_dir / "store" / "instances" / dataset.StudyInstanceUID).is_dir()
    assert (
        orthanc_client.search_for_studies(
            search_filters={"StudyInstanceUID": dataset.StudyInstanceUID}
        )
        == []
    )


def wait_for_study(client: DICOMwebClient, study_uid: str, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        found = len(client.search_for_instances(study_uid))
        if found >= count:
            return found
        time.sleep(0.3)
    return found


def test_forward_to_pacs_survives_a_pacs_that_comes_up_late(tmp_path: Path) -> None:
    """Acknowledged instances reach the PACS even when it was down at the time."""
    orthanc = OrthancServer(tmp_path / "late-orthanc")
    orthanc.http_port, orthanc.dicom_port = free_port(), free_port()
    gateway = GatewayProcess(
        tmp_path / "gateway",
        {
            "pacs": {"url": orthanc.dicomweb_url, "retries": 0, "connect_timeout_seconds": 1},
            "ingest": {"forward_to_pacs": True},
        },
    ).start()
    try:
        study = phantom(seed=402, slices=4)
        response = DICOMwebClient(gateway.dicomweb_url).store_instances(list(study.instances()))
        assert len(response.ReferencedSOPSequence) == 4
        time.sleep(1.5)  # the forwarder tries and fails while the PACS is down
        orthanc.start()
        try:
            client = DICOMwebClient(orthanc.dicomweb_url)
            found = wait_for_study(client, study.truth.study_instance_uid, 4, timeout=30)
            assert found == 4
        finally:
            orthanc.stop()
    finally:
        gateway.stop()


def test_unreachable_pacs_is_502(tmp_path: Path) -> None:
    closed_port = free_port()
    gateway = GatewayProcess(
        tmp_path,
        {"pacs": {"url": f"http://127.0.0.1:{closed_port}/dicom-web", "retries": 0}},
    ).start()
    try:
        response = httpx.get(gateway.dicomweb_url + "/studies")
        assert response.status_code == 502
        assert "unreachable" in response.text
    finally:
        gateway.stop()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that accepts connections and never answers: a hung PACS."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
                held.append(connection)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def test_hung_pacs_is_504(tmp_path: Path, silent_server: int) -> None:
    gateway = GatewayProcess(
        tmp_path,
        {
            "pacs": {
                "url": f"http://127.0.0.1:{silent_server}/dicom-web",
                "retries": 0,
                "timeout_seconds": 1,
            }
        },
    ).start()
    try:
        started = time.monotonic()
        response = httpx.get(gateway.dicomweb_url + "/studies", timeout=20)
        assert response.status_code == 504
        assert time.monotonic() - started < 10
        assert httpx.get(gateway.url + "/healthz").status_code == 200
    finally:
        gateway.stop()
