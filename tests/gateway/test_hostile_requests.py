"""Requests that once answered 500 or cut an answer short (issue 13, item 5): each is a clear
4xx now, or the right answer, from a real gateway process over a real socket."""

from __future__ import annotations

import contextlib
import io
import sqlite3

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset

from fedgate.phantom import Phantom
from tests.gateway.conftest import phantom, store_files
from tests.support.dicom import multipart_body, part10_bytes, stored_uids
from tests.support.gateway import GatewayProcess

EXPLICIT_LITTLE = b"1.2.840.10008.1.2.1\x00"
#: Same length as Explicit VR Little Endian, so the file meta's lengths still hold; unknown
#: to pydicom (and to every DICOM toolkit: it is under no registered root).
UNKNOWN_SYNTAX = "1.2.840.99999.1.2.1"
BIG = str(2**63)


def _with_unknown_transfer_syntax(dataset: Dataset) -> bytes:
    data = part10_bytes(dataset)
    assert data.count(EXPLICIT_LITTLE) == 1
    return data.replace(EXPLICIT_LITTLE, UNKNOWN_SYNTAX.encode() + b"\x00")


@pytest.fixture(scope="module")
def odd_study(gateway: GatewayProcess) -> tuple[Phantom, Dataset]:
    """A study of three instances of which the second is in an unknown transfer syntax."""
    study = phantom(seed=700, slices=3)
    instances = list(study.instances())
    parts = [
        _with_unknown_transfer_syntax(ds) if n == 1 else part10_bytes(ds)
        for n, ds in enumerate(instances)
    ]
    body, content_type = multipart_body(parts)
    response = httpx.post(
        f"{gateway.dicomweb_url}/studies", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert len(stored_uids(response.json())) == 3
    return study, instances[1]


def _url(gateway: GatewayProcess, dataset: Dataset) -> str:
    return (
        f"{gateway.dicomweb_url}/studies/{dataset.StudyInstanceUID}/series/"
        f"{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}"
    )


def test_an_instance_in_an_unknown_transfer_syntax_keeps_its_study_metadata_whole(
    gateway: GatewayProcess, odd_study: tuple[Phantom, Dataset]
) -> None:
    study, odd = odd_study
    truth = study.truth
    base = f"{gateway.dicomweb_url}/studies/{truth.study_instance_uid}"
    for url in (
        f"{base}/metadata",
        f"{base}/series/{truth.series_instance_uid}/metadata",
        f"{_url(gateway, odd)}/metadata",
    ):
        response = httpx.get(url)
        assert response.status_code == 200
        metadata = response.json()  # the whole array, not "[" and a dropped connection
        odd_metadata = [m for m in metadata if m["00080018"]["Value"] == [odd.SOPInstanceUID]]
        assert odd_metadata[0]["00280010"]["Value"] == [odd.Rows]  # its own header, read
        assert odd_metadata[0]["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    assert len(httpx.get(f"{base}/metadata").json()) == 3


def test_frames_of_an_unknown_transfer_syntax_are_a_406_naming_it(
    gateway: GatewayProcess, odd_study: tuple[Phantom, Dataset]
) -> None:
    _, odd = odd_study
    response = httpx.get(f"{_url(gateway, odd)}/frames/1")
    assert response.status_code == 406
    assert UNKNOWN_SYNTAX in response.text
    whole = httpx.get(_url(gateway, odd), headers={"Accept": "application/dicom"})
    assert whole.status_code == 200
    assert pydicom.dcmread(io.BytesIO(whole.content)).SOPInstanceUID == odd.SOPInstanceUID


@pytest.mark.parametrize(
    "params",
    [{"中": "1"}, {"includefield": "中"}, {"Patient\u00e9ID": "x"}, {"a\x00b": "1"}],
)
def test_unknown_keys_beyond_latin_1_are_a_400_with_a_warning(
    gateway: GatewayProcess, params: dict[str, str]
) -> None:
    response = httpx.get(f"{gateway.dicomweb_url}/studies", params=params)
    assert response.status_code == 400
    assert "unknown attribute" in response.text
    name = next(iter(params.values() if "includefield" in params else params))
    assert repr(name) in response.text  # the body names it as sent
    assert response.headers["Warning"].startswith('299 fedgate "unknown attribute')
    assert response.headers["Warning"].isascii()


@pytest.mark.parametrize("name", ["offset", "limit"])
def test_qido_offsets_and_limits_of_2_63_and_more(gateway: GatewayProcess, name: str) -> None:
    response = httpx.get(f"{gateway.dicomweb_url}/studies", params={name: BIG + "0"})
    assert response.status_code == 200
    if name == "offset":
        assert response.json() == []  # no table has that many rows
    else:
        assert "limit reduced" in response.headers["Warning"]
    unicode_digit = httpx.get(f"{gateway.dicomweb_url}/studies", params={name: "²"})
    assert unicode_digit.status_code == 400


def test_integer_matching_beyond_64_bits_matches_nothing(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.dicomweb_url}/instances", params={"InstanceNumber": BIG})
    assert response.status_code == 200
    assert response.json() == []


def test_job_ids_and_offsets_of_2_63_and_more(gateway: GatewayProcess) -> None:
    for method in ("GET", "DELETE"):
        response = httpx.request(method, f"{gateway.url}/jobs/{BIG}")
        assert response.status_code == 404, method
    assert httpx.post(f"{gateway.url}/jobs/{BIG}/retry").status_code == 404
    page = httpx.get(f"{gateway.url}/jobs", params={"offset": BIG})
    assert page.status_code == 200
    assert page.json()["jobs"] == []
    assert httpx.get(f"{gateway.url}/jobs", params={"limit": BIG}).status_code == 400


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/dicomweb/studies", {"fuzzymatching": "2"}, "fuzzymatching must be true or false"),
        ("/jobs", {"study": "1." + "2" * 63}, "study must be a Study Instance UID"),  # 65
        ("/jobs", {"study": ""}, "study must be a Study Instance UID"),
        ("/jobs", {"study": "true"}, "study must be a Study Instance UID"),
    ],
)
def test_values_outside_the_document_are_refused(
    gateway: GatewayProcess, path: str, params: dict[str, str], reason: str
) -> None:
    """What openapi/gateway.yaml calls invalid is a 400, not quietly taken (schemathesis)."""
    response = httpx.get(gateway.url + path, params=params)
    assert response.status_code == 400
    assert reason in response.text


def test_an_unreadable_stored_file_gives_what_the_catalog_knows(gateway: GatewayProcess) -> None:
    """A file damaged on disk after it was acknowledged must not cut its study's metadata."""
    study = phantom(seed=730, slices=2)
    instances = list(study.instances())
    body, content_type = multipart_body([part10_bytes(ds) for ds in instances])
    response = httpx.post(
        f"{gateway.dicomweb_url}/studies", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200
    damaged = instances[0]
    uid = damaged.SOPInstanceUID.encode()
    (path,) = [
        p
        for p in store_files(gateway.data_dir)
        if p.read_bytes()[128:132] == b"DICM" and uid in p.read_bytes()
    ]
    path.write_bytes(b"no longer DICOM")
    url = f"{gateway.dicomweb_url}/studies/{damaged.StudyInstanceUID}/metadata"
    # The header kept at ingest is served whole: the file is not read.
    kept = {m["00080018"]["Value"][0]: m for m in httpx.get(url).json()}
    assert kept[damaged.SOPInstanceUID]["00280010"]["Value"] == [damaged.Rows]
    # Without it (a catalog from before it was kept), the file is read, and fails.
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "store" / "catalog.sqlite")) as db:
        db.execute("DELETE FROM instance_metadata WHERE sop_instance_uid = ?", (uid.decode(),))
        db.execute("DELETE FROM series_metadata")
        db.commit()
    metadata = httpx.get(url).json()  # the whole array
    by_uid = {m["00080018"]["Value"][0]: m for m in metadata}
    assert set(by_uid) == {ds.SOPInstanceUID for ds in instances}
    assert by_uid[damaged.SOPInstanceUID]["0020000E"]["Value"] == [damaged.SeriesInstanceUID]
    assert "00280010" not in by_uid[damaged.SOPInstanceUID]  # nothing made up
    assert by_uid[instances[1].SOPInstanceUID]["00280010"]["Value"] == [instances[1].Rows]


def test_an_instance_in_an_unknown_transfer_syntax_is_not_rendered(
    gateway: GatewayProcess, odd_study: tuple[Phantom, Dataset]
) -> None:
    _, odd = odd_study
    for path in ("/rendered", "/thumbnail", "/frames/1/rendered"):
        response = httpx.get(_url(gateway, odd) + path)
        assert response.status_code == 406, (path, response.text)
        assert "cannot" in response.text
    series = _url(gateway, odd).rsplit("/instances/", 1)[0]
    assert httpx.get(series + "/thumbnail").status_code < 500
