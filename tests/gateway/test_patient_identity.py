"""A study's patient is never changed silently (issue 13, item 2), over real HTTP and DIMSE.

Instance A (PatientID PAT-X, study S) then instance B (PatientID PAT-Y, the same S): B is
refused with dcm4chee-arc's failure reason (0xA778 for the Patient ID, 0xA779 for the other
patient attributes), or, with ``ingest.patient_mismatch: accept``, stored keeping its own
attributes; either way QIDO by PAT-X still finds the study and its first instance, and the
findings index keeps the study with its first patient.
"""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from gateway.index.keys import Pseudonymizer, load_or_create_salt
from tests.gateway.conftest import phantom
from tests.support.dicom import failure_reasons, multipart_body, part10_bytes, stored_uids
from tests.support.dimse import storescu
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port

PATIENT_ID_CONFLICT = 0xA778
PATIENT_ATTRIBUTES_CONFLICT = 0xA779


def instances_of_one_study(seed: int) -> tuple[pydicom.Dataset, pydicom.Dataset]:
    """A (PAT-X) and B (PAT-Y): two instances of one study, in two series."""
    first, second = phantom(seed, slices=2).instances()
    other_series = phantom(seed + 1, slices=1)
    second.SeriesInstanceUID = other_series.truth.series_instance_uid
    for dataset, patient_id, name in (
        (first, "PAT-X", "XAVIER^ANNA"),
        (second, "PAT-Y", "YOUNG^BOB"),
    ):
        dataset.PatientID = patient_id
        dataset.PatientName = name
    return first, second


def stow(gateway: GatewayProcess, *datasets: pydicom.Dataset) -> httpx.Response:
    body, content_type = multipart_body([part10_bytes(dataset) for dataset in datasets])
    return httpx.post(
        gateway.dicomweb_url + "/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=30,
    )


def comments(response_json: dict) -> list[str]:  # type: ignore[type-arg]
    return [
        item["00000902"]["Value"][0] for item in response_json.get("00081198", {}).get("Value", [])
    ]


def patient_ids_found(client: DICOMwebClient, study_uid: str) -> dict[str, list[str]]:
    """PatientID -> the SOP Instance UIDs QIDO-RS finds with that PatientID in the study."""
    found: dict[str, list[str]] = {}
    for patient_id in ("PAT-X", "PAT-Y"):
        studies = client.search_for_studies(search_filters={"PatientID": patient_id})
        if any(s["0020000D"]["Value"][0] == study_uid for s in studies):
            instances = client.search_for_instances(study_uid)
            found[patient_id] = sorted(i["00080018"]["Value"][0] for i in instances)
    return found


def index_patient_keys(gateway: GatewayProcess) -> tuple[set[int], dict[str, int]]:
    """The findings index's patient of the study, and the patient keys of PAT-X and PAT-Y."""
    keys = Pseudonymizer(load_or_create_salt(gateway.data_dir))
    with sqlite3.connect(gateway.data_dir / "findings-index.sqlite3") as connection:
        study_patients = {row[0] for row in connection.execute("SELECT patient_key FROM studies")}
    return study_patients, {p: keys.patient(p) for p in ("PAT-X", "PAT-Y")}


def test_an_instance_of_another_patient_is_refused_and_the_study_stays_with_the_first(
    tmp_path: Path,
) -> None:
    gateway = GatewayProcess(tmp_path / "gw").start()
    try:
        first, second = instances_of_one_study(seed=1300)
        study_uid = first.StudyInstanceUID
        assert stow(gateway, first).status_code == 200
        refused = stow(gateway, second)
        assert refused.status_code == 409
        assert failure_reasons(refused.json()) == {second.SOPInstanceUID: PATIENT_ID_CONFLICT}
        (comment,) = comments(refused.json())
        assert "PatientID" in comment and "PAT-Y" in comment and "PAT-X" in comment

        client = DICOMwebClient(gateway.dicomweb_url)
        assert patient_ids_found(client, study_uid) == {"PAT-X": [first.SOPInstanceUID]}
        metadata = client.retrieve_study_metadata(study_uid)
        assert [m["00100020"]["Value"][0] for m in metadata] == ["PAT-X"]
        study_patients, key = index_patient_keys(gateway)
        assert study_patients == {key["PAT-X"]}
        assert '"store.patient_mismatch_refused"' in gateway.log()
    finally:
        gateway.stop()


def test_a_conflicting_name_is_refused_without_writing_the_names_out(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gw").start()
    try:
        first, second = instances_of_one_study(seed=1310)
        second.PatientID = "PAT-X"  # the same ID, another name: a mix-up all the same
        # In one request, the first part and then eight of the other name: the first part
        # gives the new study its patient, however the parts' checks overlap.
        others = []
        for _ in range(8):
            other = copy.deepcopy(second)
            other.SOPInstanceUID = generate_uid()
            other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
            others.append(other)
        for _ in range(5):  # five studies: the order must hold every time, not by luck
            study_uid = generate_uid()
            for dataset in (first, *others):
                dataset.StudyInstanceUID = study_uid
            response = stow(gateway, first, *others)
            assert response.status_code == 202
            assert stored_uids(response.json()) == [first.SOPInstanceUID]
            assert failure_reasons(response.json()) == {
                other.SOPInstanceUID: PATIENT_ATTRIBUTES_CONFLICT for other in others
            }
            first.SOPInstanceUID = generate_uid()
            first.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
        comment = comments(response.json())[0]
        assert "PatientName" in comment
        for name_part in ("XAVIER", "ANNA", "YOUNG", "BOB"):
            assert name_part not in comment
            assert name_part not in gateway.log()
    finally:
        gateway.stop()


def test_an_instance_that_omits_optional_patient_attributes_is_stored(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gw").start()
    try:
        first, second = instances_of_one_study(seed=1320)
        second.PatientID = "PAT-X"
        for keyword in ("PatientName", "PatientBirthDate", "PatientSex"):
            del second[keyword]
        second.PatientName = "xavier^anna^^"  # the same person name, written differently
        assert stow(gateway, first).status_code == 200
        assert stow(gateway, second).status_code == 200
    finally:
        gateway.stop()


def test_with_accept_each_instance_keeps_its_own_patient_and_the_study_its_first(
    tmp_path: Path,
) -> None:
    gateway = GatewayProcess(tmp_path / "gw", {"ingest": {"patient_mismatch": "accept"}}).start()
    try:
        first, second = instances_of_one_study(seed=1330)
        study_uid = first.StudyInstanceUID
        assert stow(gateway, first).status_code == 200
        assert stow(gateway, second).status_code == 200
        client = DICOMwebClient(gateway.dicomweb_url)
        # The study is found by its first patient, with both instances; not by the second.
        assert patient_ids_found(client, study_uid) == {
            "PAT-X": sorted([first.SOPInstanceUID, second.SOPInstanceUID])
        }
        by_instance = {
            m["00080018"]["Value"][0]: m["00100020"]["Value"][0]
            for m in client.retrieve_study_metadata(study_uid)
        }
        assert by_instance == {first.SOPInstanceUID: "PAT-X", second.SOPInstanceUID: "PAT-Y"}
        study_patients, key = index_patient_keys(gateway)
        assert study_patients == {key["PAT-X"]}
        assert '"store.patient_mismatch_accepted"' in gateway.log()
    finally:
        gateway.stop()


def test_storescu_of_another_patient_gets_a_refusal_status(tmp_path: Path) -> None:
    port = free_port()
    gateway = GatewayProcess(
        tmp_path / "gw", {"dimse": {"enabled": True, "port": port, "ae_title": "FEDGATE"}}
    ).start()
    try:
        first, second = instances_of_one_study(seed=1340)
        files = []
        for name, dataset in (("a.dcm", first), ("b.dcm", second)):
            (tmp_path / name).write_bytes(part10_bytes(dataset))
            files.append(tmp_path / name)

        assert storescu(port, "MODALITY", files[0]).returncode == 0
        refused = storescu(port, "MODALITY", files[1], debug=True)
        output = refused.stdout + refused.stderr
        assert "0xa778" in output.lower(), output
        assert "PatientID PAT-Y contradicts" in output, output  # the Error Comment
        client = DICOMwebClient(gateway.dicomweb_url)
        assert patient_ids_found(client, first.StudyInstanceUID) == {
            "PAT-X": [first.SOPInstanceUID]
        }
        assert '"dimse.refused"' in gateway.log()
    finally:
        gateway.stop()
