"""The gateway's DIMSE C-STORE SCP: DCMTK storescu in, the pipeline runs; proper statuses."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pynetdicom import AE

from tests.pipeline.conftest import chest_phantom, finished_jobs, pipeline_settings, wait_until
from tests.support.dimse import storescu
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.ports import free_port, non_loopback_address


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
        result = storescu(port, "MODALITY", *files)
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


def stored(port: int, calling_ae_title: str, path: Path, host: str = "127.0.0.1") -> str:
    """storescu's output, or RuntimeError if the store did not succeed."""
    result = storescu(port, calling_ae_title, path, host=host)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return result.stdout + result.stderr


def one_instance_file(folder: Path, seed: int) -> Path:
    files = chest_phantom(seed=seed, lesions=(), rows=32, columns=32, slices=1).write(folder)
    return files[0]


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) listening on ``port``."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return {
        fields[1].split(":")[0]
        for fields in (line.split() for line in lines)
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A"  # LISTEN
    }


def test_without_an_allow_list_the_scp_listens_on_loopback_only(tmp_path: Path) -> None:
    """Asked for 0.0.0.0 with no calling AE allow-list, it binds 127.0.0.1 (issue 13, item 8)."""
    port = free_port()
    gateway = GatewayProcess(
        tmp_path / "gw", {"dimse": {"enabled": True, "port": port, "host": "0.0.0.0"}}
    ).start()
    try:
        assert '"dimse.loopback_only"' in gateway.log()
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, not 00000000
        path = one_instance_file(tmp_path / "files", seed=810)
        stored(port, "ANY-TITLE", path)  # from this machine: any title
        with pytest.raises(RuntimeError, match=r"(?i)refused|failed|association"):
            stored(port, "ANY-TITLE", path, host=non_loopback_address())
    finally:
        gateway.stop()


def test_with_an_allow_list_unknown_calling_ae_titles_are_rejected_at_association(
    tmp_path: Path,
) -> None:
    port = free_port()
    address = non_loopback_address()
    gateway = GatewayProcess(
        tmp_path / "gw",
        {
            "dimse": {
                "enabled": True,
                "port": port,
                "host": "0.0.0.0",
                "allowed_calling_ae_titles": [
                    "CT-SCANNER",
                    {"ae_title": "ORTHANC", "host": "192.0.2.254"},
                ],
            }
        },
    ).start()
    try:
        path = one_instance_file(tmp_path / "files", seed=811)
        assert listening_addresses(port) == {"00000000"}  # every interface
        stored(port, "CT-SCANNER", path, host=address)  # allowed, from off loopback
        with pytest.raises(RuntimeError, match=r"(?i)calling ae title not recognized"):
            stored(port, "INTRUDER", path, host=address)
        # ORTHANC is allowed only from 192.0.2.254, not from here.
        with pytest.raises(RuntimeError, match=r"(?i)calling ae title not recognized"):
            stored(port, "ORTHANC", path)
        log = gateway.log()
        assert log.count('"dimse.association_rejected"') == 2
        assert '"INTRUDER"' in log
    finally:
        gateway.stop()
