"""A multi-modal cohort across imaging, ECGs and clinical metadata, answered by the federated
API of a real gateway: "patients with a CT, an ECG and an LVEF below 40 %".

The CTs arrive by STOW-RS, the clinical table and the ECGs by ``fedgate convert ... --stow``
into the same gateway; the findings index learns all three, and the cohort is one question.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import PhantomSpec, generate_phantom
from tests.convert.conftest import MAPPING
from tests.support.gateway import GatewayProcess
from tests.support.process import run_fedgate

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def fedgate(*args: str) -> subprocess.CompletedProcess[str]:
    return run_fedgate(*args, timeout=120)


def write_ecg_csv(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(0, 2.0, 1 / 500)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LEADS)
        for sample in range(len(t)):
            base = np.sin(2 * np.pi * 1.2 * t[sample])
            writer.writerow(
                [f"{base * (0.5 + i / 20) + rng.normal(0, 0.01):.4f}" for i in range(len(LEADS))]
            )


#: The site's research office: stores the data, and gets exact answers (the count checked is
#: the cohort language's, not noise's; an analyst's noisy answers are tests/federated's).
OFFICE_TOKEN = "research-office-token"


def test_patients_with_ct_ecg_and_low_lvef(tmp_path: Path) -> None:
    office = {
        "name": "research-office",
        "token_sha256": hashlib.sha256(OFFICE_TOKEN.encode()).hexdigest(),
        "roles": ["admin", "exact"],
    }
    gateway = GatewayProcess(tmp_path / "gateway", {"auth": {"clients": [office]}}).start()
    authorization = {"Authorization": f"Bearer {OFFICE_TOKEN}"}
    try:
        client = DICOMwebClient(gateway.dicomweb_url, headers=authorization)
        patients = []
        for index in range(14):  # everyone has a CT
            phantom = generate_phantom(
                PhantomSpec(
                    seed=1100 + index,
                    rows=32,
                    columns=32,
                    slices=2,
                    pixel_spacing_mm=8.0,
                    slice_thickness_mm=5.0,
                    lesion_diameters_mm=(),
                )
            )
            client.store_instances(list(phantom.instances()))
            patients.append(phantom.truth.patient_id)

        # LVEF below 40 % for the first 11 patients, 55 % for the other 3.
        table = tmp_path / "clinical.csv"
        with table.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["PatientID", "lvef", "smoking"])
            for index, patient in enumerate(patients):
                writer.writerow([patient, 30 + index % 9 if index < 11 else 55, "former"])
        mapping = tmp_path / "mapping.json"
        mapping.write_text(json.dumps(MAPPING))
        converted = fedgate(
            "convert",
            "metadata",
            "--csv",
            str(table),
            "--mapping",
            str(mapping),
            "--stow",
            gateway.dicomweb_url,
            "--token",
            OFFICE_TOKEN,
        )
        assert converted.returncode == 0, converted.stderr

        # ECGs for the first 12 patients only.
        for index, patient in enumerate(patients[:12]):
            recording = tmp_path / f"ecg-{index}.csv"
            write_ecg_csv(recording, index)
            result = fedgate(
                "convert",
                "ecg",
                "--input",
                str(recording),
                "--patient-id",
                patient,
                "--sampling-frequency",
                "500",
                "--stow",
                gateway.dicomweb_url,
                "--token",
                OFFICE_TOKEN,
            )
            assert result.returncode == 0, result.stderr

        question = {
            "cohort": {
                "patient_has": {
                    "modalities": ["CT", "ECG"],
                    "findings": [
                        {"measurements": [{"concept": "LN:10230-1", "max": 39.99, "unit": "%"}]}
                    ],
                }
            },
            "level": "patients",
            "aggregate": {"kind": "count"},
        }
        answer = httpx.post(
            gateway.url + "/federated/v1/aggregate",
            json=question,
            headers=authorization,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["count"] == 11  # CT and ECG and LVEF < 40 %: patients 0-10
        text = answer.text
        assert not any(patient in text for patient in patients)
    finally:
        gateway.stop()
