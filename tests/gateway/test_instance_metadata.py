"""WADO-RS metadata built at ingest (gateway/store/instance_json.py, issue 19).

Each instance's metadata is built from the header the intake parsed and kept in the catalog;
it must be what pydicom's ``Dataset.to_json_dict`` gives for the stored file (read with
``stop_before_pixels``, bulk data by the gateway's BulkDataURIs, the pixel data added), for
every kind of instance: CT, MR, SR, SEG (multi-frame), private elements, sequences, every VR,
implicit VR, big endian, encapsulated pixel data, another character set. A real gateway
receives them by STOW-RS; the expectation is computed from the files it stored.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from fedgate.phantom import Phantom
from gateway.store import instance_json
from gateway.store.instance_json import ROOT_MARK, encapsulated, metadata_json
from sr_writer import SegmentDescription, build_seg, build_sr, codes
from tests.gateway.conftest import phantom
from tests.sr_writer.builders import ALGORITHM, lesion_findings
from tests.support.gateway import GatewayProcess

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _relabelled(dataset: Dataset, suffix: str) -> Dataset:
    """``dataset`` as another instance of another series (its UIDs extended by ``suffix``)."""
    dataset.SeriesInstanceUID = f"{dataset.SeriesInstanceUID}.{suffix}"
    dataset.SOPInstanceUID = f"{dataset.SOPInstanceUID}.{suffix}"
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def _every_vr(dataset: Dataset) -> Dataset:
    """Values of every VR, empty ones, private elements and nested bulk data (in a study of
    its own: its patient's name is another)."""
    dataset.StudyInstanceUID = f"{dataset.StudyInstanceUID}.9"
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.PatientName = "Müller^Jörg=ミュラー^ヨルグ=mueller^joerg"
    dataset.StudyDescription = "Müller"  # the same bytes as in _latin's, read otherwise
    dataset.StudyID = ""  # present, empty
    dataset.FrameIncrementPointer = [0x00181063, 0x00181065]  # AT, two values
    dataset.DiffusionBValue = 1000.5  # FD
    dataset.VectorGridData = np.arange(6, dtype="<f4").tobytes()  # OF
    dataset.SelectorODValue = np.arange(4, dtype="<f8").tobytes()  # OD
    dataset.SelectorOLValue = np.arange(3, dtype="<u4").tobytes()  # OL
    dataset.SelectorSVValue = [-(2**40), 7]  # SV
    dataset.SelectorUVValue = [2**50]  # UV
    dataset.SelectorSLValue = [-5, 6]
    dataset.SelectorSSValue = [-3]
    dataset.SelectorULValue = [4_000_000_000]
    dataset.SelectorUSValue = [1, 2, 3]
    dataset.SelectorFLValue = [0.25, -1.5]
    dataset.SelectorDSValue = ["1.50", "-0.0", "1e3"]
    dataset.SelectorISValue = [" 12", "-4"]
    dataset.SelectorDAValue = "20240131"
    dataset.SelectorTMValue = "101010.5"
    dataset.SelectorDTValue = "20240131101010+0100"
    dataset.SelectorASValue = "063Y"
    dataset.LongCodeValue = "a long code value" * 5  # UC
    dataset.URNCodeValue = "urn:oid:1.2.3"  # UR
    dataset.TextValue = "line one\r\nline two  "  # UT
    dataset.SelectorOBValue = b"\x01\x02" * 200  # OB inline (under the bulk threshold)
    dataset.SelectorOWValue = b"\x03\x04" * 600  # OW bulk: a BulkDataURI
    icon = Dataset()
    icon.Rows = icon.Columns = 32
    icon.BitsAllocated = 8
    icon.PixelData = bytes(range(256)) * 4  # bulk data inside a sequence
    dataset.IconImageSequence = [icon]
    block = dataset.private_block(0x0029, "FEDGATE TEST", create=True)
    block.add_new(0x01, "LO", "private text")
    block.add_new(0x02, "DS", "1.5\\2.5")
    block.add_new(0x03, "OB", b"\x05" * 2000)  # private bulk data
    return dataset


def _latin(dataset: Dataset) -> Dataset:
    """Text in ISO 8859-1 whose bytes are those of a UTF-8 text of :func:`_every_vr`."""
    dataset.StudyInstanceUID = f"{dataset.StudyInstanceUID}.8"
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.StudyDescription = "Müller".encode().decode("latin-1")
    return dataset


def _variants(study: Phantom, lesion_study: Phantom) -> list[Dataset]:
    slices = list(study.instances())
    ct = slices[0]
    mr = _relabelled(slices[1], "1")
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    mr.Modality = "MR"
    mr.EchoTime = "12.5"
    mr.MagneticFieldStrength = "3"
    odd = _every_vr(_relabelled(slices[2], "2"))
    implicit = _relabelled(slices[3], "3")
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit.SmallestImagePixelValue = 0  # US or SS: resolved by PixelRepresentation
    implicit.private_block(0x0031, "FEDGATE TEST", create=True).add_new(0x01, "LO", "hidden")
    again = list(study.instances())  # fresh copies of the slices
    big = _relabelled(again[0], "4")
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    latin = _latin(_relabelled(again[2], "6"))
    compressed = _relabelled(again[1], "5")
    compressed.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    compressed.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"])
    compressed["PixelData"].VR = "OB"
    compressed.BitsAllocated = compressed.BitsStored = 8
    compressed.HighBit = 7
    compressed.PhotometricInterpretation = "YBR_FULL_422"

    images = list(lesion_study.instances())
    headers = [
        pydicom.dcmread(io.BytesIO(_saved(image)), stop_before_pixels=True) for image in images
    ]
    sr = build_sr(lesion_findings(lesion_study, headers), headers)
    mask = np.zeros((len(images), images[0].Rows, images[0].Columns), dtype=bool)
    mask[1:3, 10:20, 10:20] = True
    seg = build_seg(
        mask,
        headers,
        [
            SegmentDescription(
                number=1,
                label="Nodule 1",
                category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                type=codes.NODULE,
                tracking_identifier="Nodule 1",
            )
        ],
        ALGORITHM,
    )
    return [ct, mr, odd, implicit, big, compressed, latin, *images, sr, seg]


def _saved(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, list]]:  # type: ignore[type-arg]
    gateway = GatewayProcess(tmp_path_factory.mktemp("metadata")).start()
    try:
        study = phantom(seed=240, slices=4)
        lesion_study = phantom(seed=241, slices=4, lesion_diameters_mm=(12.0,))
        datasets = _variants(study, lesion_study)
        body = [pydicom.dcmread(io.BytesIO(_saved(d))) for d in datasets]
        response = DICOMwebClient(gateway.dicomweb_url).store_instances(body)
        assert "FailedSOPSequence" not in response, response
        yield gateway, datasets
    finally:
        gateway.stop()


def _catalog_rows(gateway: GatewayProcess) -> list[sqlite3.Row]:
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "store" / "catalog.sqlite")) as db:
        db.row_factory = sqlite3.Row
        return db.execute(
            "SELECT i.*, m.metadata FROM instances i LEFT JOIN instance_metadata m "
            "ON m.sop_instance_uid = i.sop_instance_uid ORDER BY i.sop_instance_uid"
        ).fetchall()


def _pydicom_metadata(path: Path, row: sqlite3.Row, base: str) -> dict:  # type: ignore[type-arg]
    """What pydicom makes of the stored file, with the gateway's BulkDataURIs."""
    url = (
        f"{base}/studies/{row['study_instance_uid']}/series/{row['series_instance_uid']}"
        f"/instances/{row['sop_instance_uid']}"
    )
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    attributes = dataset.to_json_dict(
        bulk_data_threshold=1024,
        bulk_data_element_handler=lambda element: f"{url}/bulkdata/{element.tag:08X}",
        suppress_invalid_tags=True,
    )
    if row["number_of_frames"] is not None or "Rows" in dataset:
        attributes["7FE00010"] = {
            "vr": "OW" if encapsulated(row["transfer_syntax_uid"]) is False else "OB",
            "BulkDataURI": f"{url}/bulkdata/7FE00010",
        }
    return attributes


def test_kept_metadata_is_pydicoms_json_of_the_stored_file(stored: tuple) -> None:  # type: ignore[type-arg]
    gateway, datasets = stored
    rows = _catalog_rows(gateway)
    assert len(rows) == len(datasets)
    built = [row for row in rows if row["metadata"] is not None]
    # Every kind is built at ingest (the compressed one and big endian too: parsed by pydicom).
    assert len(built) == len(rows)
    for row in built:
        path = gateway.data_dir / "store" / row["path"]
        expected = _pydicom_metadata(path, row, ROOT_MARK)
        kept = bytes(row["metadata"])
        assert json.loads(kept) == expected, row["sop_class_uid"]
        assert kept == json.dumps(expected, separators=(",", ":")).encode()


def test_what_a_viewer_checks_in_the_kept_metadata(stored: tuple) -> None:  # type: ignore[type-arg]
    gateway, datasets = stored
    odd = datasets[2]
    url = (
        f"{gateway.dicomweb_url}/studies/{odd.StudyInstanceUID}/series/"
        f"{odd.SeriesInstanceUID}/metadata"
    )
    (item,) = httpx.get(url).json()
    assert item["00100010"]["Value"] == [
        {"Alphabetic": "Müller^Jörg", "Ideographic": "ミュラー^ヨルグ", "Phonetic": "mueller^joerg"}
    ]
    assert item["00280009"]["Value"] == ["00181063", "00181065"]
    assert item["00200010"] == {"vr": "SH"}
    icon = item["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    assert icon.startswith(f"{gateway.dicomweb_url}/studies/")
    bulk = httpx.get(item["00720069"]["BulkDataURI"])  # follows as a client would
    assert bulk.status_code == 200 and bytes(odd.SelectorOWValue) in bulk.content


def test_first_request_before_stable_reads_no_file(stored: tuple) -> None:  # type: ignore[type-arg]
    """The series' metadata before it is stable (nothing kept for the series yet) comes from
    what ingest kept: with the series' files gone, it is still answered whole."""
    gateway, datasets = stored
    images = datasets[7:11]
    study, series = images[0].StudyInstanceUID, images[0].SeriesInstanceUID
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "store" / "catalog.sqlite")) as db:
        kept = "SELECT count(*) FROM series_metadata WHERE series_instance_uid = ?"
        assert db.execute(kept, (series,)).fetchone()[0] == 0
    folder = gateway.data_dir / "store" / "instances" / study / series
    for path in folder.rglob("*.dcm"):
        path.unlink()
    metadata = httpx.get(f"{gateway.dicomweb_url}/studies/{study}/series/{series}/metadata")
    assert metadata.status_code == 200
    items = metadata.json()
    assert sorted(item["00080018"]["Value"][0] for item in items) == sorted(
        str(image.SOPInstanceUID) for image in images
    )
    assert all("00280030" in item for item in items)  # PixelSpacing: the whole header
    one = httpx.get(
        f"{gateway.dicomweb_url}/studies/{study}/series/{series}/instances/"
        f"{images[2].SOPInstanceUID}/metadata"
    ).json()
    assert [item["00080018"] for item in one] == [{"vr": "UI", "Value": [images[2].SOPInstanceUID]}]
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "store" / "catalog.sqlite")) as db:
        # The concatenation of the instances' own metadata is not kept a second time.
        assert db.execute(kept, (series,)).fetchone()[0] == 0


def test_instances_stored_without_kept_metadata_are_read_from_their_files(stored: tuple) -> None:  # type: ignore[type-arg]
    """A catalog from before the kept metadata (or a header that could not be built in memory)
    has no row for an instance: its file is read, to the same answer."""
    gateway, datasets = stored
    mr = datasets[1]
    url = f"{gateway.dicomweb_url}/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}"
    kept = httpx.get(f"{url}/instances/{mr.SOPInstanceUID}/metadata")
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "store" / "catalog.sqlite")) as db:
        db.execute("DELETE FROM instance_metadata WHERE sop_instance_uid = ?", (mr.SOPInstanceUID,))
        db.commit()
    from_file = httpx.get(f"{url}/metadata")  # the whole series: no kept row for it either
    assert from_file.status_code == 200 and kept.status_code == 200
    assert from_file.content == kept.content
    assert from_file.json()[0]["00180081"]["Value"] == [12.5]  # EchoTime, as a viewer reads it


def test_kept_elements_stay_within_their_bound_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every instance brings its own UIDs and positions: what is kept for the next ones must
    # not grow with the number of instances ingested, and the metadata must not change when
    # the kept elements are dropped.
    bound = 20_000
    monkeypatch.setattr(instance_json, "_KEPT_BYTES_MAX", bound)
    monkeypatch.setattr(instance_json, "_kept_bytes", 0)
    monkeypatch.setattr(instance_json, "_KEPT_ELEMENTS", {})
    study = phantom(71, slices=40)
    url = "urn:fedgate:dicomweb-root/studies/1/series/2/instances/3"
    highest = 0
    for image in study.instances():
        saved = _saved(image)
        header = pydicom.dcmread(io.BytesIO(saved), stop_before_pixels=True)
        kept = metadata_json(header, image.file_meta.TransferSyntaxUID, url, lambda: True)
        assert kept is not None
        expected = pydicom.dcmread(io.BytesIO(saved), stop_before_pixels=True).to_json_dict(
            bulk_data_threshold=1024,
            bulk_data_element_handler=lambda element: f"{url}/bulkdata/{element.tag:08X}",
        )
        expected["7FE00010"] = {"vr": "OW", "BulkDataURI": f"{url}/bulkdata/7FE00010"}
        assert json.loads(kept) == expected
        highest = max(highest, instance_json.kept_elements_bytes())
    assert 0 < highest <= bound
