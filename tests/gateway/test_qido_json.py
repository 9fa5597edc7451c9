"""QIDO-RS answers written straight from the catalog (gateway/dicomweb/qido_json.py, issue 19)
are, byte for byte, the DICOM JSON the gateway built before: one dict per result
(:func:`gateway.dicomweb.qido.build_result`), ``json.dumps``'d. A real gateway over real files
answers; the old way is computed over the same store and the same parsed request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from starlette.requests import Request

from fedgate.phantom import Phantom
from gateway.dicomweb import qido
from gateway.store import EmbeddedStore
from gateway.store.ingest import IngestPolicy
from gateway.store.query import QueryLevel, search
from tests.gateway.conftest import phantom
from tests.support.gateway import GatewayProcess


@pytest.fixture(scope="module")
def studies(gateway: GatewayProcess) -> list[Phantom]:
    """Three studies, one of them with a name outside ASCII (escaped as json.dumps does) and
    one with two series whose instances are numbered out of order."""
    made = [phantom(seed=seed, slices=3) for seed in (230, 231)]
    client = DICOMwebClient(gateway.dicomweb_url)
    datasets = list(made[0].instances())
    for dataset in datasets:
        dataset.SpecificCharacterSet = "ISO_IR 100"
        dataset.PatientName = "Müller^Jörg"
        dataset.ReferringPhysicianName = ""  # present, empty
    client.store_instances(datasets)
    second = list(made[1].instances())
    for number, dataset in zip((3, 1, 2), second, strict=True):
        dataset.InstanceNumber = number
    other = phantom(seed=231, slices=2).instances()
    moved = []
    for dataset in other:
        dataset.StudyInstanceUID = made[1].truth.study_instance_uid
        dataset.SeriesInstanceUID = made[1].truth.series_instance_uid + ".2"
        dataset.SOPInstanceUID = dataset.SOPInstanceUID + ".2"
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.Modality = "MR"
        del dataset.SeriesNumber  # an absent attribute: returned empty
        moved.append(dataset)
    client.store_instances(second + moved)
    return made


@pytest.fixture(scope="module")
def store(gateway: GatewayProcess) -> Iterator[EmbeddedStore]:
    """The gateway's store, opened beside it (read only here)."""
    opened = EmbeddedStore(gateway.data_dir / "store", IngestPolicy())
    try:
        yield opened
    finally:
        opened.close()


def _the_old_way(store: EmbeddedStore, url: str, level: QueryLevel, path_params: dict) -> bytes:  # type: ignore[type-arg]
    parts = urlsplit(url)
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": parts.path,
            "query_string": parts.query.encode(),
            "headers": [],
            "path_params": path_params,
        }
    )
    query, include, _ = qido.parse_query(request, level)
    base = url.split("/dicomweb", 1)[0] + "/dicomweb"
    rows = search(store.catalog, query)
    results = [qido.build_result(store, row, level, include, base) for row in rows]
    return json.dumps(results, separators=(",", ":")).encode()


QUERIES = [
    ("", {}),
    ("includefield=ModalitiesInStudy,00100020", {}),
    ("includefield=SOPClassesInStudy&includefield=InstanceNumber", {}),
    ("includefield=PatientAge", {}),  # read from a file
    ("includefield=all", {}),
    ("PatientName=M*&fuzzymatching=true", {}),
    ("limit=2&offset=1", {}),
    ("Modality=MR", {}),
    ("ModalitiesInStudy=CT&includefield=StudyDescription", {}),
]


@pytest.mark.parametrize("query", [q for q, _ in QUERIES])
@pytest.mark.parametrize(
    "level",
    ["studies", "series", "instances", "study-series", "study-instances", "series-instances"],
)
def test_answers_are_the_json_built_the_old_way(
    gateway: GatewayProcess, store: EmbeddedStore, studies: list[Phantom], level: str, query: str
) -> None:
    truth = studies[1].truth
    study, series = truth.study_instance_uid, truth.series_instance_uid
    path, query_level, params = {
        "studies": ("/studies", QueryLevel.STUDY, {}),
        "series": ("/series", QueryLevel.SERIES, {}),
        "instances": ("/instances", QueryLevel.INSTANCE, {}),
        "study-series": (f"/studies/{study}/series", QueryLevel.SERIES, {"study": study}),
        "study-instances": (f"/studies/{study}/instances", QueryLevel.INSTANCE, {"study": study}),
        "series-instances": (
            f"/studies/{study}/series/{series}/instances",
            QueryLevel.INSTANCE,
            {"study": study, "series": series},
        ),
    }[level]
    url = f"{gateway.dicomweb_url}{path}" + (f"?{query}" if query else "")
    response = httpx.get(url, headers={"Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    assert response.content == _the_old_way(store, url, query_level, params)
    if not query and level == "study-instances":
        # What a user checks: both series, in series then instance-number order.
        answer = response.json()
        assert len(answer) == 5
        assert [item["00200013"]["Value"][0] for item in answer] == [1, 2, 3, 1, 2]
        assert [item["00080060"]["Value"][0] for item in answer] == ["CT"] * 3 + ["MR"] * 2
    if level == "studies" and not query:
        names = [item["00100010"] for item in response.json()]
        assert {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jörg"}]} in names
        assert b"M\\u00fcller" in response.content  # escaped as json.dumps does
