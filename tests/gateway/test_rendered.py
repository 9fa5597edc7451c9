"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3-4) of a CT the store holds."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from fedgate.phantom import Phantom
from tests.gateway.conftest import phantom
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer


@pytest.fixture(scope="module")
def ct(gateway: GatewayProcess) -> Phantom:
    study = phantom(seed=310, slices=3)
    DICOMwebClient(gateway.dicomweb_url).store_instances(list(study.instances()))
    return study


def _instance_url(gateway: GatewayProcess, ct: Phantom, index: int = 0) -> str:
    instance = list(ct.instances())[index]
    return (
        f"{gateway.dicomweb_url}/studies/{instance.StudyInstanceUID}/series/"
        f"{instance.SeriesInstanceUID}/instances/{instance.SOPInstanceUID}"
    )


def _image(response: httpx.Response, media_type: str) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    picture = Image.open(io.BytesIO(response.content))
    picture.load()
    assert picture.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[media_type]
    return picture


def _expected_display(ct: Phantom, center: float, width: float, index: int = 0) -> np.ndarray:
    """The CT slice in HU through a linear VOI window (PS3.3 C.11.2.1.2.1), as 0..255."""
    dataset = list(ct.instances())[index]
    hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    fraction = (hu - (center - 0.5)) / (width - 1) + 0.5
    return np.rint(np.clip(fraction, 0, 1) * 255).astype(np.uint8)


def test_rendered_png_shows_the_stored_window(gateway: GatewayProcess, ct: Phantom) -> None:
    response = httpx.get(_instance_url(gateway, ct) + "/rendered", headers={"Accept": "image/png"})
    picture = _image(response, "image/png")
    assert picture.size == (ct.spec.columns, ct.spec.rows)
    shown = np.asarray(picture.convert("L"))
    dataset = next(iter(ct.instances()))
    expected = _expected_display(ct, float(dataset.WindowCenter), float(dataset.WindowWidth))
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 1
    assert int(shown.max()) - int(shown.min()) > 100  # air dark, body bright: an image


def test_window_parameter_overrides_the_stored_one(gateway: GatewayProcess, ct: Phantom) -> None:
    response = httpx.get(
        _instance_url(gateway, ct) + "/rendered",
        params={"window": "40,400,linear"},
        headers={"Accept": "image/png"},
    )
    shown = np.asarray(_image(response, "image/png").convert("L"))
    assert np.abs(shown.astype(int) - _expected_display(ct, 40, 400).astype(int)).max() <= 1


def test_rendered_defaults_to_jpeg_and_frames_render(gateway: GatewayProcess, ct: Phantom) -> None:
    url = _instance_url(gateway, ct)
    for path in ("/rendered", "/frames/1/rendered"):
        picture = _image(httpx.get(url + path), "image/jpeg")
        assert picture.size == (ct.spec.columns, ct.spec.rows)
        assert picture.mode == "L"
    _image(httpx.get(url + "/rendered", headers={"Accept": "image/*"}), "image/jpeg")


def test_viewport_scales_keeping_the_aspect_ratio(gateway: GatewayProcess, ct: Phantom) -> None:
    url = _instance_url(gateway, ct) + "/rendered"
    for viewport, size in (("32,32", (32, 32)), ("200,100", (100, 100)), ("96,", (96, 96))):
        response = httpx.get(url, params={"viewport": viewport})
        assert _image(response, "image/jpeg").size == size, viewport


def test_thumbnails_of_instance_series_and_study(gateway: GatewayProcess, ct: Phantom) -> None:
    instance = _instance_url(gateway, ct)
    middle = _instance_url(gateway, ct, index=1)  # of three slices
    series = instance.rsplit("/instances/", 1)[0]
    study = series.rsplit("/series/", 1)[0]
    png = {"Accept": "image/png"}
    thumbnail = _image(httpx.get(instance + "/thumbnail", headers=png), "image/png")
    assert max(thumbnail.size) == 128
    small = _image(httpx.get(instance + "/thumbnail", params={"viewport": "48,48"}), "image/jpeg")
    assert small.size == (48, 48)
    of_middle = httpx.get(middle + "/thumbnail", headers=png).content
    assert httpx.get(series + "/thumbnail", headers=png).content == of_middle
    assert httpx.get(study + "/thumbnail", headers=png).content == of_middle


def test_refusals_are_4xx(gateway: GatewayProcess, ct: Phantom) -> None:
    url = _instance_url(gateway, ct)
    unknown = url.rsplit("/", 1)[0] + "/1.2.3.4.5"
    cases = [
        (httpx.get(url + "/rendered", headers={"Accept": "application/dicom"}), 406),
        (httpx.get(url + "/thumbnail", headers={"Accept": "image/gif"}), 406),
        (httpx.get(unknown + "/rendered"), 404),
        (httpx.get(unknown + "/thumbnail"), 404),
        (httpx.get(url + "/frames/2/rendered"), 404),
        (httpx.get(url + "/frames/0/rendered"), 400),
        (httpx.get(url + "/rendered", params={"viewport": "0,10"}), 400),
        (httpx.get(url + "/rendered", params={"viewport": "a,b"}), 400),
        (httpx.get(url + "/rendered", params={"window": "40,0,linear"}), 400),
        (httpx.get(url + "/rendered", params={"window": "40,400,sigmoid"}), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, (str(response.url), response.text)
        assert response.headers["warning"].startswith("299 ")


@pytest.mark.orthanc
def test_a_study_only_in_the_pacs_is_rendered_by_the_pacs(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = phantom(seed=311, slices=1)
    DICOMwebClient(orthanc.dicomweb_url).store_instances(list(study.instances()))
    gateway = GatewayProcess(tmp_path / "gateway", {"pacs": {"url": orthanc.dicomweb_url}})
    gateway.start()
    try:
        path = _instance_url(gateway, study).removeprefix(gateway.dicomweb_url) + "/rendered"
        from_pacs = httpx.get(orthanc.dicomweb_url + path, headers={"Accept": "image/png"})
        through = httpx.get(gateway.dicomweb_url + path, headers={"Accept": "image/png"})
        picture = _image(through, "image/png")
        assert picture.size == (study.spec.columns, study.spec.rows)
        assert through.content == from_pacs.content  # the PACS's own rendering, passed on
    finally:
        gateway.stop()
