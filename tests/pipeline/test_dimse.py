"""The gateway's DIMSE C-STORE SCP: DCMTK storescu in, the pipeline runs; proper statuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
from dicomweb_client.api import DICOMwebClient
from pynetdicom import AE

from tests.pipeline.conftest import chest_phantom, finished_jobs, pipeline_settings, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.ports import free_port
from tests.support.requirements import require_executable


def test_storescu_to_the_gateway_runs_the_pipeline(
    tmp_path: Path, inference: InferenceProcess
) -> None:
    port = free_port()
    gateway = GatewayProcess(
        tmp_path / "gw",
        pipeline_settings(
            inference.url, dimse={"enabled": True, "port": port, "ae_title": "FEDGATE"}
        ),
    ).start()
    try:
        phantom = chest_phantom(seed=800)
        files = phantom.write(tmp_path / "files")
        result = subprocess.run(
            [
                require_executable("storescu"),
                "-aet",
                "MODALITY",
                "-aec",
                "FEDGATE",
                "127.0.0.1",
                str(port),
                *map(str, files),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        (job,) = wait_until(lambda: finished_jobs(gateway, 1), 90, "the job")
        assert job["state"] == "succeeded"
        client = DICOMwebClient(gateway.dicomweb_url)
        stored = client.search_for_instances(
            phantom.truth.study_instance_uid, search_filters={"Modality": "CT"}
        )
        assert len(stored) == len(files)
        assert client.search_for_instances(
            phantom.truth.study_instance_uid, search_filters={"Modality": "SR"}
        )
    finally:
        gateway.stop()


def test_unsupported_sop_class_gets_0122_and_bad_data_c000(tmp_path: Path) -> None:
    port = free_port()
    gateway = GatewayProcess(
        tmp_path / "gw",
        {
            "dimse": {"enabled": True, "port": port},
            "ingest": {"sop_classes": [str(pydicom.uid.CTImageStorage)]},
        },
    ).start()
    try:
        ct = next(chest_phantom(seed=801, lesions=(), rows=32, columns=32, slices=2).instances())
        mr = next(chest_phantom(seed=802, lesions=(), rows=32, columns=32, slices=2).instances())
        mr.SOPClassUID = pydicom.uid.MRImageStorage
        mr.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        no_uid = next(
            chest_phantom(seed=803, lesions=(), rows=32, columns=32, slices=2).instances()
        )
        no_uid.SeriesInstanceUID = "1.2.abc"

        ae = AE(ae_title="TESTSCU")
        for sop_class in (pydicom.uid.CTImageStorage, pydicom.uid.MRImageStorage):
            ae.add_requested_context(sop_class, pydicom.uid.ExplicitVRLittleEndian)
        association = ae.associate("127.0.0.1", port, ae_title="FEDGATE")
        assert association.is_established
        try:
            statuses = [association.send_c_store(ds).Status for ds in (ct, mr, no_uid)]
        finally:
            association.release()
        assert statuses == [0x0000, 0x0122, 0xC000]
        assert httpx_get_ok(gateway)
    finally:
        gateway.stop()


def httpx_get_ok(gateway: GatewayProcess) -> bool:
    import httpx

    return httpx.get(gateway.url + "/healthz").status_code == 200
