"""QIDO-RS matching and WADO-RS retrieval on the embedded store, through dicomweb-client."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom
from tests.gateway.conftest import phantom
from tests.support.gateway import GatewayProcess


@pytest.fixture(scope="module")
def phantoms(gateway: GatewayProcess) -> list[Phantom]:
    """Five studies with different patients, sexes and dates, stored once for the module."""
    studies = [phantom(seed=seed, slices=3) for seed in range(200, 205)]
    client = DICOMwebClient(gateway.dicomweb_url)
    for study in studies:
        client.store_instances(list(study.instances()))
    return studies


def uids(results: list[dict], tag: str = "0020000D") -> set[str]:  # type: ignore[type-arg]
    return {result[tag]["Value"][0] for result in results}


def test_studies_match_patient_id_exactly(client: DICOMwebClient, phantoms: list[Phantom]) -> None:
    target = phantoms[2].truth
    results = client.search_for_studies(search_filters={"PatientID": target.patient_id})
    assert uids(results) == {target.study_instance_uid}
    study = results[0]
    assert study["00201206"]["Value"] == [1]  # NumberOfStudyRelatedSeries
    assert study["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
    assert study["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
    assert study["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{target.study_instance_uid}")


def test_patient_name_wildcards(client: DICOMwebClient, phantoms: list[Phantom]) -> None:
    females = {p.truth.study_instance_uid for p in phantoms if p.truth.patient_sex == "F"}
    results = client.search_for_studies(search_filters={"PatientName": "Phantom^Female*"})
    assert uids(results) & {p.truth.study_instance_uid for p in phantoms} == females
    name = phantoms[0].truth.patient_name
    pattern = name[:-1] + "?"  # one character wildcard
    assert phantoms[0].truth.study_instance_uid in uids(
        client.search_for_studies(search_filters={"PatientName": pattern})
    )


def test_study_date_ranges(client: DICOMwebClient, phantoms: list[Phantom]) -> None:
    dates = sorted(p.truth.study_date for p in phantoms)
    low, high = dates[1], dates[3]
    expected = {p.truth.study_instance_uid for p in phantoms if low <= p.truth.study_date <= high}
    ours = {p.truth.study_instance_uid for p in phantoms}
    results = client.search_for_studies(search_filters={"StudyDate": f"{low}-{high}"})
    assert uids(results) & ours == expected
    open_ended = client.search_for_studies(search_filters={"StudyDate": f"{high}-"})
    assert uids(open_ended) & ours == {
        p.truth.study_instance_uid for p in phantoms if p.truth.study_date >= high
    }


def test_modality_and_accession_number(client: DICOMwebClient, phantoms: list[Phantom]) -> None:
    target = phantoms[1].truth
    results = client.search_for_studies(
        search_filters={"ModalitiesInStudy": "CT", "AccessionNumber": target.accession_number}
    )
    assert uids(results) == {target.study_instance_uid}
    assert (
        client.search_for_studies(
            search_filters={"ModalitiesInStudy": "MR", "AccessionNumber": target.accession_number}
        )
        == []
    )
    series = client.search_for_series(
        search_filters={"Modality": "CT", "AccessionNumber": target.accession_number}
    )
    assert uids(series, "0020000E") == {target.series_instance_uid}


def test_uid_lists(client: DICOMwebClient, phantoms: list[Phantom]) -> None:
    wanted = {phantoms[0].truth.study_instance_uid, phantoms[4].truth.study_instance_uid}
    results = client.search_for_studies(search_filters={"StudyInstanceUID": ",".join(wanted)})
    assert uids(results) == wanted


def test_limit_and_offset_page_through_results(
    client: DICOMwebClient, phantoms: list[Phantom]
) -> None:
    every = client.search_for_studies()
    pages = [client.search_for_studies(limit=2, offset=offset) for offset in (0, 2, 4)]
    assert [len(page) for page in pages[:2]] == [2, 2]
    seen = [s["0020000D"]["Value"][0] for page in pages for s in page]
    assert seen == [s["0020000D"]["Value"][0] for s in every][: len(seen)]


def test_instances_of_a_series(client: DICOMwebClient, phantoms: list[Phantom]) -> None:
    truth = phantoms[3].truth
    results = client.search_for_instances(truth.study_instance_uid, truth.series_instance_uid)
    assert uids(results, "00080018") == set(truth.sop_instance_uids)
    assert [r["00200013"]["Value"][0] for r in results] == [1, 2, 3]


def test_includefield_names_and_all(client: DICOMwebClient, phantoms: list[Phantom]) -> None:
    truth = phantoms[0].truth
    results = client.search_for_series(
        truth.study_instance_uid, fields=["SliceThickness", "00180060"]
    )
    assert results[0]["00180050"]["Value"] == [5.0]  # from the file: not a catalog column
    assert results[0]["00180060"]["Value"] == [120.0]  # KVP, by tag
    everything = client.search_for_instances(
        truth.study_instance_uid, truth.series_instance_uid, fields=["all"]
    )
    assert "00200032" in everything[0]  # ImagePositionPatient
    assert "7FE00010" not in everything[0]  # never bulk data in QIDO


def test_no_match_is_an_empty_array_with_200(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.dicomweb_url + "/studies", params={"PatientID": "nobody"})
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["content-type"] == "application/dicom+json"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"NotAnAttribute": "x"}, "unknown attribute"),
        ({"StudyDate": "2020-13"}, "StudyDate"),
        ({"limit": "-1"}, "limit"),
        ({"InstanceNumber": "one"}, "integer"),
    ],
)
def test_bad_queries_are_400_with_a_reason(
    gateway: GatewayProcess, params: dict[str, str], reason: str
) -> None:
    response = httpx.get(gateway.dicomweb_url + "/instances", params=params)
    assert response.status_code == 400
    assert reason in response.text


def test_retrieve_study_series_and_instance(
    client: DICOMwebClient, phantoms: list[Phantom]
) -> None:
    study = phantoms[0]
    truth = study.truth
    sent = {ds.SOPInstanceUID: ds for ds in study.instances()}
    for retrieved in client.retrieve_study(truth.study_instance_uid):
        assert retrieved.PixelData == sent[retrieved.SOPInstanceUID].PixelData
    assert len(client.retrieve_series(truth.study_instance_uid, truth.series_instance_uid)) == 3


def test_metadata_refers_to_pixel_data_by_bulk_data_uri(
    client: DICOMwebClient, phantoms: list[Phantom]
) -> None:
    truth = phantoms[1].truth
    metadata = client.retrieve_series_metadata(truth.study_instance_uid, truth.series_instance_uid)
    assert len(metadata) == 3
    pixel = metadata[0]["7FE00010"]
    assert "InlineBinary" not in pixel and "Value" not in pixel
    assert pixel["BulkDataURI"].endswith("/bulkdata/7FE00010")
    study_metadata = client.retrieve_study_metadata(truth.study_instance_uid)
    assert {m["00080018"]["Value"][0] for m in study_metadata} == set(truth.sop_instance_uids)


def test_bulk_data_uri_returns_the_pixel_data(
    gateway: GatewayProcess, client: DICOMwebClient, phantoms: list[Phantom]
) -> None:
    study = phantoms[1]
    dataset = next(study.instances())
    truth = study.truth
    url = (
        f"{gateway.dicomweb_url}/studies/{truth.study_instance_uid}/series/"
        f"{truth.series_instance_uid}/instances/{dataset.SOPInstanceUID}/metadata"
    )
    metadata = httpx.get(url).json()
    bulk = client.retrieve_bulkdata(metadata[0]["7FE00010"]["BulkDataURI"])
    assert bulk[0] == dataset.PixelData


def test_frames_are_the_stored_pixels(client: DICOMwebClient, phantoms: list[Phantom]) -> None:
    study = phantoms[2]
    dataset = next(study.instances())
    frames = client.retrieve_instance_frames(
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID, [1]
    )
    pixels = np.frombuffer(frames[0], dtype=np.uint16).reshape(dataset.Rows, dataset.Columns)
    assert np.array_equal(pixels, dataset.pixel_array)


def test_missing_resources_are_404(gateway: GatewayProcess, phantoms: list[Phantom]) -> None:
    truth = phantoms[0].truth
    base = gateway.dicomweb_url
    assert httpx.get(f"{base}/studies/1.2.3").status_code == 404
    instance = (
        f"{base}/studies/{truth.study_instance_uid}/series/{truth.series_instance_uid}"
        f"/instances/{truth.sop_instance_uids[0]}"
    )
    assert httpx.get(f"{instance}/frames/2").status_code == 404
    assert httpx.get(f"{instance}/frames/x").status_code == 400


def test_transcoding_requests_are_406(gateway: GatewayProcess, phantoms: list[Phantom]) -> None:
    truth = phantoms[0].truth
    response = httpx.get(
        f"{gateway.dicomweb_url}/studies/{truth.study_instance_uid}",
        headers={
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.50"
        },
    )
    assert response.status_code == 406
    assert "transcode" in response.text
    wrong_type = httpx.get(
        f"{gateway.dicomweb_url}/studies/{truth.study_instance_uid}",
        headers={"Accept": "application/zip"},
    )
    assert wrong_type.status_code == 406


def test_series_metadata_is_kept_until_the_series_changes(gateway: GatewayProcess) -> None:
    """Issue 19: a series' metadata is built from its files once and kept. Kept bytes carry
    the root of whoever asks (RetrieveURL, BulkDataURI), and a new instance of the series is
    in the next answer."""
    study = phantom(seed=210, slices=4)
    datasets = list(study.instances())
    client = DICOMwebClient(gateway.dicomweb_url)
    client.store_instances(datasets[:3])
    truth = study.truth
    url = (
        f"{gateway.dicomweb_url}/studies/{truth.study_instance_uid}/series/"
        f"{truth.series_instance_uid}/metadata"
    )
    first = httpx.get(url).json()
    assert len(first) == 3 and first[0]["00100020"]["Value"] == [truth.patient_id]

    # Served from what was kept: the files are no longer read (one is gone, yet its header,
    # PatientID included, is still answered), and the root is the asker's.
    gone = sorted((gateway.data_dir / "store" / "instances" / truth.study_instance_uid).rglob("*"))
    next(path for path in gone if path.is_file()).unlink()
    proxied = httpx.get(url, headers={"Host": "pacs.example.org:8443"}).json()
    assert [item["00100020"] for item in proxied] == [item["00100020"] for item in first]
    bulk = proxied[0]["7FE00010"]["BulkDataURI"]
    assert bulk.startswith("http://pacs.example.org:8443/dicomweb/studies/")
    assert bulk == first[0]["7FE00010"]["BulkDataURI"].replace(
        gateway.url, "http://pacs.example.org:8443"
    )

    client.store_instances(datasets[3:])
    after = httpx.get(url).json()
    assert {item["00080018"]["Value"][0] for item in after} == {
        str(dataset.SOPInstanceUID) for dataset in datasets
    }


def test_a_stable_series_metadata_is_prepared_before_any_request(tmp_path: Path) -> None:
    """Issue 19: when a series becomes stable, the gateway builds its metadata ahead of the
    viewer, so the first request reads what was kept, not the files (one is removed here, and
    its header is still answered whole). Instances stored since catalog schema 5 have their
    own metadata already: this is for those stored before it, as here, where it is removed."""
    gateway = GatewayProcess(tmp_path / "gw", {"pipeline": {"stable_after_seconds": 2}}).start()
    try:
        study = phantom(seed=211, slices=3)
        DICOMwebClient(gateway.dicomweb_url).store_instances(list(study.instances()))
        truth = study.truth
        catalog = gateway.data_dir / "store" / "catalog.sqlite"
        with contextlib.closing(sqlite3.connect(catalog)) as connection:
            connection.execute("DELETE FROM instance_metadata")
            connection.commit()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.closing(sqlite3.connect(catalog)) as connection:
                kept = connection.execute("SELECT count(*) FROM series_metadata").fetchone()[0]
            if kept:
                break
            time.sleep(0.2)
        assert "pipeline.study_stable" in gateway.log()
        folder = gateway.data_dir / "store" / "instances" / truth.study_instance_uid
        next(path for path in sorted(folder.rglob("*.dcm"))).unlink()
        metadata = httpx.get(
            f"{gateway.dicomweb_url}/studies/{truth.study_instance_uid}/series/"
            f"{truth.series_instance_uid}/metadata"
        ).json()
        assert len(metadata) == 3
        assert all(item["00100020"]["Value"] == [truth.patient_id] for item in metadata)
    finally:
        gateway.stop()
