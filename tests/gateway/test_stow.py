"""STOW-RS into the embedded store: good instances, and every kind of bad input the issue lists.

Each bad-input case sends a valid instance alongside, and checks that the valid one is stored
and retrievable, that the server stays up, and that nothing half-written becomes visible.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.gateway.conftest import MAX_REQUEST_BYTES, phantom, store_files
from tests.support.dicom import failure_reasons, multipart_body, part10_bytes, stored_uids
from tests.support.gateway import GatewayProcess

CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
MISMATCH = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122


def post(
    gateway: GatewayProcess, body: bytes, content_type: str, path: str = "/studies"
) -> httpx.Response:
    return httpx.post(
        gateway.dicomweb_url + path,
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=30,
    )


def assert_retrievable(client: DICOMwebClient, dataset: pydicom.Dataset) -> None:
    retrieved = client.retrieve_instance(
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID
    )
    assert retrieved.SOPInstanceUID == dataset.SOPInstanceUID
    assert retrieved.PixelData == dataset.PixelData


def assert_still_up(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_dicomweb_client_stores_a_series_that_comes_back_identical(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    series = list(phantom(seed=100).instances())
    response = client.store_instances(series)
    stored = {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence}
    assert stored == {ds.SOPInstanceUID for ds in series}
    assert "FailedSOPSequence" not in response
    # dicomweb-client sends "Host" without the port: the URL must still reach this gateway.
    assert response.RetrieveURL == f"{gateway.dicomweb_url}/studies/{series[0].StudyInstanceUID}"
    for dataset in series:
        assert_retrievable(client, dataset)


def test_chunked_transfer_is_accepted(gateway: GatewayProcess, client: DICOMwebClient) -> None:
    dataset = next(phantom(seed=101).instances())
    body, content_type = multipart_body([part10_bytes(dataset)])

    def chunks():  # a generator body makes httpx send Transfer-Encoding: chunked
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = httpx.post(
        gateway.dicomweb_url + "/studies", content=chunks(), headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert_retrievable(client, dataset)


def test_not_multipart_is_415(gateway: GatewayProcess) -> None:
    dataset = next(phantom(seed=102).instances())
    response = post(gateway, part10_bytes(dataset), "application/dicom")
    assert response.status_code == 415
    assert "multipart/related" in response.headers["Warning"]
    response = post(gateway, b'{"a": 1}', "application/json")
    assert response.status_code == 415
    assert_still_up(gateway)


def test_multipart_of_dicom_json_is_415(gateway: GatewayProcess) -> None:
    body, _ = multipart_body([b"[]"], boundary="b1", content_type="application/dicom+json")
    response = post(gateway, body, 'multipart/related; type="application/dicom+json"; boundary=b1')
    assert response.status_code == 415


def test_multipart_without_boundary_is_400(gateway: GatewayProcess) -> None:
    dataset = next(phantom(seed=103).instances())
    body, _ = multipart_body([part10_bytes(dataset)])
    response = post(gateway, body, 'multipart/related; type="application/dicom"')
    assert response.status_code == 400
    assert "boundary" in response.text
    assert_still_up(gateway)


def test_long_boundaries_are_accepted_and_absurd_ones_are_400(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    dataset = next(phantom(seed=118).instances())
    boundary = "b" * 100  # longer than RFC 2046's 70, as Orthanc's STOW client sends
    body, content_type = multipart_body([part10_bytes(dataset)], boundary=boundary)
    assert post(gateway, body, content_type).status_code == 200
    assert_retrievable(client, dataset)
    boundary = "b" * 1000
    body, content_type = multipart_body([part10_bytes(dataset)], boundary=boundary)
    response = post(gateway, body, content_type)
    assert response.status_code == 400
    assert "boundary" in response.text


def test_empty_body_is_400(gateway: GatewayProcess) -> None:
    response = post(gateway, b"", 'multipart/related; type="application/dicom"; boundary=x')
    assert response.status_code == 400
    assert_still_up(gateway)


def test_body_that_never_closes_its_multipart_is_400(gateway: GatewayProcess) -> None:
    response = post(
        gateway,
        b"--x\r\nContent-Type: application/dicom\r\n\r\nabc",
        "multipart/related; boundary=x",
    )
    assert response.status_code == 400


def test_part_that_is_not_dicom_fails_and_its_neighbour_is_stored(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    good = next(phantom(seed=104).instances())
    body, content_type = multipart_body([b"this is not DICOM at all" * 10, part10_bytes(good)])
    response = post(gateway, body, content_type)
    assert response.status_code == 202
    assert list(failure_reasons(response.json()).values()) == [CANNOT_UNDERSTAND]
    assert stored_uids(response.json()) == [good.SOPInstanceUID]
    assert_retrievable(client, good)


def test_truncated_part10_file_fails(gateway: GatewayProcess, client: DICOMwebClient) -> None:
    truncated, good = list(phantom(seed=105, slices=2).instances())
    data = part10_bytes(truncated)
    body, content_type = multipart_body([data[: len(data) // 2], part10_bytes(good)])
    response = post(gateway, body, content_type)
    assert response.status_code == 202
    reasons = failure_reasons(response.json())
    assert reasons == {truncated.SOPInstanceUID: CANNOT_UNDERSTAND}
    assert_retrievable(client, good)
    assert (
        client.search_for_instances(search_filters={"SOPInstanceUID": truncated.SOPInstanceUID})
        == []
    )


def test_dataset_without_sop_instance_uid_fails(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    broken, good = list(phantom(seed=106, slices=2).instances())
    del broken.SOPInstanceUID
    del broken.file_meta.MediaStorageSOPInstanceUID
    data = part10_bytes_unchecked(broken)
    body, content_type = multipart_body([data, part10_bytes(good)])
    response = post(gateway, body, content_type)
    assert response.status_code == 202
    failed = response.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert "SOPInstanceUID is missing" in failed["00000902"]["Value"][0]
    assert_retrievable(client, good)


def part10_bytes_unchecked(dataset: pydicom.Dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "bad_uid", ["1.2.3/../../../../tmp/evil", "..", "1.2.abc", "1.2..3", "1.02.3", "1." + "2" * 70]
)
def test_uid_with_illegal_characters_never_reaches_a_path(
    gateway: GatewayProcess, client: DICOMwebClient, bad_uid: str
) -> None:
    broken, good = list(phantom(seed=107, slices=2, series_description=bad_uid[:10]).instances())
    broken.SOPInstanceUID = bad_uid
    broken.file_meta.MediaStorageSOPInstanceUID = bad_uid
    body, content_type = multipart_body([part10_bytes_unchecked(broken), part10_bytes(good)])
    response = post(gateway, body, content_type)
    assert response.status_code == 202
    assert list(failure_reasons(response.json()).values()) == [CANNOT_UNDERSTAND]
    assert_retrievable(client, good)
    for path in store_files(gateway.data_dir):
        assert "evil" not in str(path) and ".." not in path.name
    assert not list(gateway.data_dir.parent.rglob("evil*"))


def test_study_uid_in_url_that_is_not_a_uid_is_400(gateway: GatewayProcess) -> None:
    dataset = next(phantom(seed=108).instances())
    body, content_type = multipart_body([part10_bytes(dataset)])
    response = post(gateway, body, content_type, path="/studies/1.2.abc")
    assert response.status_code == 400


def test_study_uid_contradicting_the_url_fails_with_a900(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    dataset = next(phantom(seed=109).instances())
    body, content_type = multipart_body([part10_bytes(dataset)])
    response = post(gateway, body, content_type, path="/studies/1.2.3.4")
    assert response.status_code == 409
    assert failure_reasons(response.json()) == {dataset.SOPInstanceUID: MISMATCH}
    # The same instance to its own study URL is stored.
    response = post(gateway, body, content_type, path=f"/studies/{dataset.StudyInstanceUID}")
    assert response.status_code == 200
    assert_retrievable(client, dataset)


def test_instance_over_the_size_limit_fails_with_a700_and_others_are_stored(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    large = next(phantom(seed=110, slices=1, rows=512, columns=512).instances())  # 512 KiB
    good = next(phantom(seed=111).instances())
    body, content_type = multipart_body([part10_bytes(large), part10_bytes(good)])
    response = post(gateway, body, content_type)
    assert response.status_code == 202
    assert list(failure_reasons(response.json()).values()) == [OUT_OF_RESOURCES]
    assert_retrievable(client, good)
    assert (
        client.search_for_studies(search_filters={"StudyInstanceUID": large.StudyInstanceUID}) == []
    )


def test_request_over_the_request_limit_is_413(gateway: GatewayProcess) -> None:
    body = b"x" * (MAX_REQUEST_BYTES + 1)
    response = post(gateway, body, 'multipart/related; type="application/dicom"; boundary=x')
    assert response.status_code == 413
    assert_still_up(gateway)


def test_part_without_preamble_is_stored_as_proper_part10(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    """What dicomweb-client sends for a dataset built in memory without ``preamble``."""
    dataset = next(phantom(seed=112).instances())
    del dataset.preamble
    response = client.store_instances([dataset])
    assert len(response.ReferencedSOPSequence) == 1
    retrieved = client.retrieve_instance(
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID
    )
    assert retrieved.PixelData == dataset.PixelData
    (path,) = [p for p in store_files(gateway.data_dir) if p.stem == dataset.SOPInstanceUID]
    assert path.read_bytes()[128:132] == b"DICM"
    assert pydicom.dcmread(path).SOPInstanceUID == dataset.SOPInstanceUID  # no force needed


def test_bare_dataset_without_file_meta_is_stored_as_proper_part10(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    import io

    dataset = next(phantom(seed=113).instances())
    buffer = io.BytesIO()
    del dataset.file_meta
    del dataset.preamble
    pydicom.dcmwrite(buffer, dataset, implicit_vr=True, little_endian=True)
    raw = buffer.getvalue()
    assert raw[:4] == b"\x08\x00\x05\x00"  # the dataset's first element: no meta, no preamble
    body, content_type = multipart_body([raw])
    response = post(gateway, body, content_type)
    assert response.status_code == 200, response.text
    retrieved = client.retrieve_instance(
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID
    )
    assert retrieved.PixelData == dataset.PixelData
    assert retrieved.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian


def test_same_instance_twice_is_idempotent_and_a_changed_copy_replaces_with_a_warning(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    dataset = next(phantom(seed=114).instances())
    body, content_type = multipart_body([part10_bytes(dataset)])
    assert post(gateway, body, content_type).status_code == 200
    again = post(gateway, body, content_type)
    assert again.status_code == 200
    assert "00081196" not in again.json()["00081199"]["Value"][0]

    dataset.SeriesDescription = "Corrected description"
    body, content_type = multipart_body([part10_bytes(dataset)])
    replaced = post(gateway, body, content_type)
    assert replaced.status_code == 202
    item = replaced.json()["00081199"]["Value"][0]
    assert item["00081196"]["Value"] == [0xB000]
    assert "replaced" in item["00000902"]["Value"][0]
    series = client.search_for_series(
        search_filters={"SeriesInstanceUID": dataset.SeriesInstanceUID}
    )
    assert series[0]["0008103E"]["Value"] == ["Corrected description"]
    instances = client.search_for_instances(
        search_filters={"SOPInstanceUID": dataset.SOPInstanceUID}
    )
    assert len(instances) == 1


def non_empty_files(folder: Path) -> list[Path]:
    found = []
    for path in folder.iterdir():
        try:
            if path.stat().st_size > 0:
                found.append(path)
        except FileNotFoundError:
            pass  # published or removed between listing and looking
    return found


def test_client_disconnecting_mid_upload_leaves_nothing_half_written(
    gateway: GatewayProcess, client: DICOMwebClient
) -> None:
    complete, cut = list(phantom(seed=115, slices=2).instances())
    body, content_type = multipart_body([part10_bytes(complete), part10_bytes(cut)])
    half = body[: len(body) - len(part10_bytes(cut)) // 2]
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            (
                "POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + half
        )
        time.sleep(0.3)
    # The cut instance never becomes visible and leaves no temporary file behind (the empty
    # files there are the ones the store makes ahead for the next parts).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leftovers = non_empty_files(gateway.data_dir / "store" / "tmp")
        if not leftovers:
            break
        time.sleep(0.1)
    assert leftovers == []
    assert client.search_for_instances(search_filters={"SOPInstanceUID": cut.SOPInstanceUID}) == []
    assert not [p for p in store_files(gateway.data_dir) if p.stem == cut.SOPInstanceUID]
    assert_still_up(gateway)


def test_sop_class_not_accepted_fails_with_0122(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ct = next(phantom(seed=116).instances())
    mr = next(phantom(seed=117).instances())
    mr.SOPClassUID = pydicom.uid.MRImageStorage
    mr.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    process = GatewayProcess(
        tmp_path, {"ingest": {"sop_classes": [str(pydicom.uid.CTImageStorage)]}}
    ).start()
    try:
        body, content_type = multipart_body([part10_bytes(mr), part10_bytes(ct)])
        response = post(process, body, content_type)
        assert response.status_code == 202
        assert failure_reasons(response.json()) == {mr.SOPInstanceUID: SOP_CLASS_NOT_SUPPORTED}
        assert stored_uids(response.json()) == [ct.SOPInstanceUID]
    finally:
        process.stop()


def test_stored_instances_are_counted_in_metrics(gateway: GatewayProcess) -> None:
    text = httpx.get(gateway.url + "/metrics").text
    stored = [
        line for line in text.splitlines() if line.startswith("fedgate_instances_stored_total")
    ]
    assert stored and float(stored[0].split()[-1]) >= 1
    assert 'fedgate_stow_failures_total{reason="0xC000"}' in text
