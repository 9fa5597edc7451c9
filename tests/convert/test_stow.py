"""Both converters STOW into a real Orthanc, beside the same patient's CT, and read back."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import wfdb
from dicomweb_client.api import DICOMwebClient

from fedgate.cli import main
from fedgate.phantom import Phantom
from sr_writer.clinical import read_clinical_values
from tests.convert.conftest import MAPPING
from tests.convert.test_ecg import LEADS_12, synthetic_ecg, write_wfdb
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port

pytestmark = pytest.mark.orthanc


def test_metadata_and_ecg_join_the_patients_imaging_study_in_orthanc(
    tmp_path: Path,
    orthanc: OrthancServer,
    small_phantom: Phantom,
    mapping_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = DICOMwebClient(url=orthanc.dicomweb_url)
    client.store_instances(list(small_phantom.instances()))
    truth = small_phantom.truth
    table = tmp_path / "clinical.csv"
    table.write_text(
        "PatientID,StudyInstanceUID,lvef,smoking\n"
        f"{truth.patient_id},{truth.study_instance_uid},38,current\n"
        # Another patient's row naming this study: refused, never filed into it.
        f"SOMEONE-ELSE,{truth.study_instance_uid},45,never\n"
    )
    header = write_wfdb(tmp_path, "ecg", synthetic_ecg(10, 500, 12), 500, LEADS_12)
    metadata_args = [
        "convert",
        "metadata",
        "--csv",
        str(table),
        "--mapping",
        str(mapping_file),
        "--stow",
        orthanc.dicomweb_url,
    ]
    ecg_args = [
        "convert",
        "ecg",
        "--input",
        str(header),
        "--patient-id",
        truth.patient_id,
        "--study-instance-uid",
        truth.study_instance_uid,
        "--stow",
        orthanc.dicomweb_url,
    ]

    assert main(metadata_args) == 1
    assert main(ecg_args) == 0
    err = capsys.readouterr().err
    assert "stored 1/1" in err  # progress
    assert (
        f"skipped: {table}:3: StudyInstanceUID: study {truth.study_instance_uid} belongs to "
        f"another PatientID in the PACS ({truth.patient_id!r}), not 'SOMEONE-ELSE'"
    ) in err

    # One patient, one study: the CT, the clinical SR and the ECG side by side.
    assert len(httpx.get(f"{orthanc.url}/patients").json()) == 1
    series = client.search_for_series(study_instance_uid=truth.study_instance_uid)
    modalities = sorted(item["00080060"]["Value"][0] for item in series)
    assert modalities == ["CT", "ECG", "SR"]

    by_modality = {item["00080060"]["Value"][0]: item["0020000E"]["Value"][0] for item in series}
    (report,) = client.retrieve_series(truth.study_instance_uid, by_modality["SR"])
    (ecg,) = client.retrieve_series(truth.study_instance_uid, by_modality["ECG"])
    # Patient and study attributes copied from what the PACS holds for the CT.
    for dataset in (report, ecg):
        assert str(dataset.PatientName) == truth.patient_name
        assert dataset.PatientSex == truth.patient_sex
        assert dataset.StudyDate == truth.study_date
        assert dataset.AccessionNumber == truth.accession_number
    values = read_clinical_values(report)
    assert [(v.concept.value, getattr(v.value, "value", v.value)) for v in values] == [
        ("10230-1", 38.0),
        ("365981007", MAPPING["columns"]["smoking"]["values"]["current"]["code"]),
    ]
    np.testing.assert_allclose(
        ecg.waveform_array(0), wfdb.rdrecord(str(tmp_path / "ecg")).p_signal, atol=1e-9
    )
    # Series Numbers apart from the AI results' SR and SEG (9001, 9002) and the imaging.
    assert (report.SeriesNumber, ecg.SeriesNumber) == (9101, 9201)

    # Converting again replaces, it does not duplicate.
    assert main(metadata_args) == 1 and main(ecg_args) == 0
    assert len(httpx.get(f"{orthanc.url}/studies").json()) == 1
    stats = httpx.get(f"{orthanc.url}/statistics").json()
    assert stats["CountInstances"] == small_phantom.spec.slices + 2

    # A second ECG of the study takes the next free number; converted again, it keeps it.
    second = write_wfdb(tmp_path, "ecg2", synthetic_ecg(10, 500, 12, seed=9), 500, LEADS_12)
    second_args = [*ecg_args]
    second_args[second_args.index(str(header))] = str(second)
    assert main(second_args) == 0 and main(second_args) == 0
    numbers = sorted(
        int(item["00200011"]["Value"][0])
        for item in client.search_for_series(
            study_instance_uid=truth.study_instance_uid, fields=["SeriesNumber"]
        )
    )
    assert numbers[1:] == [9101, 9201, 9202]  # after the CT's own
    stats = httpx.get(f"{orthanc.url}/statistics").json()

    # An ECG of another patient naming this study is refused before anything is sent.
    other = [*ecg_args]
    other[other.index(truth.patient_id)] = "SOMEONE-ELSE"
    assert main(other) == 2
    assert "belongs to another PatientID in the PACS" in capsys.readouterr().err
    assert (
        httpx.get(f"{orthanc.url}/statistics").json()["CountInstances"] == stats["CountInstances"]
    )


def test_stow_to_an_unreachable_server_reports_each_object(
    tmp_path: Path, mapping_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "clinical.csv"
    table.write_text("PatientID,lvef\nP1,40\nP2,50\n")
    url = f"http://127.0.0.1:{free_port()}/dicom-web"

    status = main(
        ["convert", "metadata", "--csv", str(table), "--mapping", str(mapping_file), "--stow", url]
    )

    assert status == 1
    err = capsys.readouterr().err
    assert err.count("not stored: 2.25.") == 2
    # The progress says what the server confirmed, never what was merely sent.
    assert "stored 2/2" not in err and "stored 0/2 (2 not stored)" in err
    assert "0 object(s) delivered, 2 failed" in err
