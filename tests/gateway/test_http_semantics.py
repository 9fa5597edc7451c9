"""HTTP semantics (issue 13, item 6): the whole Allow list on a 405 (RFC 9110 15.5.6) and
content negotiation of QIDO-RS and WADO-RS (PS3.18 8.7.8.1), on a real gateway process."""

from __future__ import annotations

import io

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.gateway.conftest import phantom
from tests.support.dicom import multipart_body, part10_bytes
from tests.support.gateway import GatewayProcess
from tests.support.openapi import assert_documented, load_spec

SPEC = load_spec("gateway.yaml")


@pytest.fixture(scope="module")
def stored(gateway: GatewayProcess) -> Dataset:
    dataset = next(phantom(seed=710, slices=1).instances())
    body, content_type = multipart_body([part10_bytes(dataset)])
    response = httpx.post(
        f"{gateway.dicomweb_url}/studies", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200
    return dataset


def _allow(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers["Allow"].split(",")}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/dicomweb/studies", {"GET", "HEAD", "POST"}),
        ("PUT", "/dicomweb/studies/1.2.3", {"GET", "HEAD", "POST"}),
        ("POST", "/dicomweb/studies/1.2.3/metadata", {"GET", "HEAD"}),
        ("PUT", "/jobs/1", {"GET", "HEAD", "DELETE"}),
        ("GET", "/jobs/1/retry", {"POST"}),
        ("DELETE", "/federated/v1/count", {"GET", "HEAD"}),
    ],
)
def test_a_405_lists_every_method_of_the_resource(
    gateway: GatewayProcess, method: str, path: str, allowed: set[str]
) -> None:
    response = httpx.request(method, gateway.url + path)
    assert response.status_code == 405
    assert _allow(response) == allowed
    for other in allowed - {"HEAD"}:  # and each of them is indeed not a 405
        assert httpx.request(other, gateway.url + path).status_code != 405


@pytest.mark.parametrize("suffix", ["/metadata", ""])
def test_json_resources_asked_as_an_image_are_406(
    gateway: GatewayProcess, stored: Dataset, suffix: str
) -> None:
    url = f"{gateway.dicomweb_url}/studies/{stored.StudyInstanceUID}{suffix}"
    if not suffix:  # QIDO-RS: the study's series
        url += "/series"
    refused = httpx.get(url, headers={"Accept": "image/png"})
    assert refused.status_code == 406
    assert "application/dicom+json" in refused.text
    assert_documented(SPEC, refused)
    for accept in ("application/dicom+json", "application/json", "image/png, */*;q=0.1"):
        response = httpx.get(url, headers={"Accept": accept})
        assert response.status_code == 200, accept
        assert response.json()[0]["0020000D"]["Value"] == [stored.StudyInstanceUID]
    assert httpx.get(url, headers={"Accept": "application/dicom+json;q=0"}).status_code == 406


def test_an_instance_asked_as_application_dicom_is_a_single_part(
    gateway: GatewayProcess, stored: Dataset
) -> None:
    study = f"{gateway.dicomweb_url}/studies/{stored.StudyInstanceUID}"
    instance = f"{study}/series/{stored.SeriesInstanceUID}/instances/{stored.SOPInstanceUID}"
    response = httpx.get(instance, headers={"Accept": "application/dicom"})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(response.content)).PixelData == stored.PixelData
    assert_documented(SPEC, response)
    # A study is many instances: one part cannot carry it (PS3.18 Table 8.7.3-2).
    assert httpx.get(study, headers={"Accept": "application/dicom"}).status_code == 406
    both = httpx.get(
        study, headers={"Accept": 'application/dicom, multipart/related; type="application/dicom"'}
    )
    assert both.status_code == 200
    assert both.headers["content-type"].startswith("multipart/related")
    multipart = httpx.get(
        instance, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert multipart.headers["content-type"].startswith("multipart/related")


def test_one_frame_as_a_single_octet_stream_part(gateway: GatewayProcess, stored: Dataset) -> None:
    instance = (
        f"{gateway.dicomweb_url}/studies/{stored.StudyInstanceUID}/series/"
        f"{stored.SeriesInstanceUID}/instances/{stored.SOPInstanceUID}"
    )
    frame = httpx.get(f"{instance}/frames/1", headers={"Accept": "application/octet-stream"})
    assert frame.status_code == 200
    assert frame.headers["content-type"].startswith("application/octet-stream")
    assert frame.content == stored.PixelData
    assert_documented(SPEC, frame)
    assert httpx.get(f"{instance}/frames/1", headers={"Accept": "image/png"}).status_code == 406
