"""The viewer a radiologist uses shows the SR: OHIF 3.13 in headless Chromium (issue 3).

The phantom study and the SR this library wrote go into a real Orthanc (default settings) over
STOW-RS; OHIF's prebuilt dist/ is served same-origin with a DICOMweb proxy
(tests/viewer/ohif_server) to Orthanc, or to the gateway's ``/dicomweb`` in front of that
Orthanc (``pacs.url``: the pass-through of issue 13, item 1);
Chromium opens the study, the test double-clicks the SR series and checks that the measurement
text and the ROI are drawn. The screenshot is saved in the test's output folder.
OHIF served from another origin reads the gateway directly (CORS, ``http.cors_origins``) and
shows the thumbnails the gateway renders (issue 18, item 7).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from sr_writer import ImageRegion, build_seg, build_sr
from tests.sr_writer.builders import ALGORITHM, lesion_findings
from tests.sr_writer.npm import OHIF_DIST, ensure_node_packages
from tests.sr_writer.test_seg import segments as seg_segments
from tests.sr_writer.test_seg import sphere_masks
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.requirements import missing, require_executable
from tests.viewer.ohif_server import OhifServer

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(params=["orthanc", "through-gateway"])
def ohif(
    request: pytest.FixtureRequest, orthanc: OrthancServer, tmp_path: Path
) -> Iterator[OhifServer]:
    """OHIF reading Orthanc directly, or the gateway whose PACS is that Orthanc."""
    ensure_node_packages()
    gateway: GatewayProcess | None = None
    if request.param == "orthanc":
        server = OhifServer(OHIF_DIST, orthanc.dicomweb_url)
    else:
        gateway = GatewayProcess(tmp_path / "gateway", {"pacs": {"url": orthanc.dicomweb_url}})
        gateway.start()
        server = OhifServer(OHIF_DIST, gateway.dicomweb_url, prefix="/dicomweb")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if gateway is not None:
            gateway.stop()


def wait_for_series_list(page: Any, thumbnail: Any, seconds: float = 90) -> None:
    """Wait for the series list, dismissing the first-run tour and the investigational-use
    banner as they appear (they cover the viewport and swallow clicks)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dismiss_overlays(page)
        if thumbnail.count():
            return
        page.wait_for_timeout(500)
    raise AssertionError("OHIF did not list the study's series")


def dismiss_overlays(page: Any) -> None:
    for label in ("Skip all", "Confirm and hide"):
        button = page.get_by_text(label)
        if button.count():
            button.first.click()


def wait_for_text(page: Any, viewport: Any, wanted: str, seconds: float) -> str:
    """Poll the page text for ``wanted``, nudging the viewport to render meanwhile.

    Headless, OHIF draws a read-only SR annotation only when the viewport re-renders after
    the SR is loaded: a pointer moving over the image does it when the SR opens before the CT
    has been displayed, but when the SR replaces a CT already on screen only a change of image
    does. So: move the mouse over the image, then scroll one image on and back (as a reader
    would), until the text shows.
    """
    deadline = time.monotonic() + seconds
    text = ""
    attempt = 0
    while time.monotonic() < deadline:
        box = viewport.bounding_box()
        if box:
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            if attempt % 3 == 2:
                page.mouse.wheel(0, 100)
                page.wait_for_timeout(300)
                page.mouse.wheel(0, -100)
            attempt += 1
        page.wait_for_timeout(700)
        text = str(page.inner_text("body"))
        if wanted in text:
            return text
    return text


def test_ohif_draws_the_sr_roi_and_its_diameter(
    lesion_phantom: Phantom,
    phantom_datasets: list[Dataset],
    orthanc: OrthancServer,
    ohif: OhifServer,
    tmp_path: Path,
) -> None:
    chromium = require_executable("chromium", "/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extras install it
        missing("playwright (Python) is not installed")
        raise

    sr = build_sr(lesion_findings(lesion_phantom, phantom_datasets), phantom_datasets)
    client = DICOMwebClient(url=orthanc.dicomweb_url)
    stored = client.store_instances([*phantom_datasets, sr])
    # Check what Orthanc actually stored, not only the status (DESIGN.md, lessons).
    assert len(stored.ReferencedSOPSequence) == len(phantom_datasets) + 1
    study_uid = lesion_phantom.truth.study_instance_uid

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{ohif.url}/viewer?StudyInstanceUIDs={study_uid}", timeout=60_000)
            sr_thumbnail = page.locator("[data-cy='study-browser-thumbnail-no-image']").first
            wait_for_series_list(page, sr_thumbnail)
            # Let the first display set (the CT) settle before opening the SR in its place.
            page.wait_for_timeout(2000)
            dismiss_overlays(page)
            sr_thumbnail.dblclick()
            viewport = page.locator(".cornerstone-viewport-element, [data-viewport-uid]").first
            text = wait_for_text(page, viewport, "Diameter: 12.30 mm", seconds=60)
            page.wait_for_timeout(1000)
            screenshot = tmp_path / "ohif-sr.png"
            print(f"screenshot: {screenshot}", flush=True)
            page.screenshot(path=str(screenshot))
            (tmp_path / "ohif-page.txt").write_text(text)
            (tmp_path / "ohif-annotations.svg").write_text(
                "\n".join(
                    page.locator("svg.svg-layer").evaluate_all("l => l.map(e => e.outerHTML)")
                )
            )
            # Cornerstone draws a CIRCLE ROI as an SVG ellipse with rx = ry.
            circles = page.locator("svg.svg-layer ellipse").evaluate_all(
                """elements => elements.map(e => {
                    const svg = e.ownerSVGElement.getBoundingClientRect();
                    return {cx: +e.getAttribute('cx'), cy: +e.getAttribute('cy'),
                            r: +e.getAttribute('rx'), ry: +e.getAttribute('ry'),
                            width: svg.width, height: svg.height};
                })"""
            )
        finally:
            browser.close()

    assert "Diameter: 12.30 mm" in text, f"see {screenshot}; page text:\n{text[:2000]}"
    assert "Probability: 87.00 %" in text  # the finding's probability 0.87, in percent
    # The ROI: a circle where the lesion is. OHIF fits the 128x128 image into the viewport
    # (same scale on both axes, centred), so the SR's pixel coordinates map linearly to it.
    region = sr_region(lesion_phantom, phantom_datasets)
    (column, row), (edge, _) = region.points
    drawn = [c for c in circles if c["r"] > 2 and abs(c["r"] - c["ry"]) < 0.5]
    assert drawn, f"no ROI circle drawn; see {screenshot}"
    scale = min(drawn[0]["width"], drawn[0]["height"]) / 128
    expected = (
        drawn[0]["width"] / 2 + (column - 64) * scale,
        drawn[0]["height"] / 2 + (row - 64) * scale,
        (edge - column) * scale,
    )
    assert any(
        abs(c["cx"] - expected[0]) < scale  # within one image pixel
        and abs(c["cy"] - expected[1]) < scale
        and abs(c["r"] - expected[2]) < scale / 2
        for c in drawn
    ), f"circles {drawn}, expected about {expected}; see {screenshot}"


def sr_region(phantom: Phantom, datasets: list[Dataset]) -> ImageRegion:
    """The first finding's circle, as the SR holds it (pixel coordinates)."""
    region = lesion_findings(phantom, datasets).findings[0].region
    assert isinstance(region, ImageRegion)
    return region


def test_ohif_loads_the_seg_over_the_ct(
    lesion_phantom: Phantom,
    phantom_datasets: list[Dataset],
    orthanc: OrthancServer,
    ohif: OhifServer,
    tmp_path: Path,
) -> None:
    """OHIF opens the SEG on its CT (only with a correct ReferencedSeriesSequence, DESIGN.md):
    the segmentation panel lists both segments and the overlay is painted over the image."""
    chromium = require_executable("chromium", "/usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    masks = sphere_masks(lesion_phantom, phantom_datasets) >= 0.5
    seg = build_seg(masks, phantom_datasets, seg_segments(2), ALGORITHM)
    client = DICOMwebClient(url=orthanc.dicomweb_url)
    stored = client.store_instances([*phantom_datasets, seg])
    assert len(stored.ReferencedSOPSequence) == len(phantom_datasets) + 1
    study_uid = lesion_phantom.truth.study_instance_uid

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{ohif.url}/viewer?StudyInstanceUIDs={study_uid}", timeout=60_000)
            seg_thumbnail = page.locator("[data-cy='study-browser-thumbnail-no-image']").first
            wait_for_series_list(page, seg_thumbnail)
            page.wait_for_timeout(2000)
            dismiss_overlays(page)
            seg_thumbnail.dblclick()
            # "Do you want to open this Segmentation?" -> Yes (loads it onto the CT).
            page.get_by_role("button", name="Yes").first.click(timeout=60_000)
            panel = page.locator("[data-cy='panelSegmentation-btn']").first
            panel.wait_for(timeout=60_000)
            deadline = time.monotonic() + 60
            text = ""
            while time.monotonic() < deadline and "Nodule 2" not in text:
                if "Nodule 1" not in text:
                    panel.click()
                page.wait_for_timeout(1000)
                text = str(page.inner_text("body"))
            viewport = page.locator(".cornerstone-viewport-element, [data-viewport-uid]").first
            box = viewport.bounding_box()
            screenshot = tmp_path / "ohif-seg.png"
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()

    assert "Nodule 1" in text and "Nodule 2" in text, f"see {screenshot}"
    assert "RecommendedDisplayCIELabValue not found" not in text  # our segments have colours
    # The CT is grey: saturated pixels in the viewport are the segments' overlay.
    assert box is not None
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    x0, y0 = int(box["x"]), int(box["y"])
    x1, y1 = x0 + int(box["width"]), y0 + int(box["height"])
    view = pixels[y0:y1, x0:x1]
    saturation = view.max(axis=-1) - view.min(axis=-1)
    assert int((saturation > 80).sum()) > 20, f"no segment overlay painted; see {screenshot}"


def test_ohif_on_another_origin_shows_the_gateway_thumbnails(tmp_path: Path) -> None:
    """OHIF served from one origin reads the gateway (embedded store) at another, allowed by
    ``http.cors_origins``; its series list shows the CT thumbnail the gateway renders."""
    chromium = require_executable("chromium", "/usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    ensure_node_packages()
    study = generate_phantom(PhantomSpec(seed=77, slices=3, rows=64, columns=64))
    gateway = GatewayProcess(tmp_path / "gateway")
    gateway.port = free_port()  # the viewer's config names the gateway before it starts
    server = OhifServer(OHIF_DIST, gateway.dicomweb_url, cross_origin=True).start()
    gateway.settings["http"] = {"cors_origins": [server.url]}
    gateway.start()
    try:
        DICOMwebClient(gateway.dicomweb_url).store_instances(list(study.instances()))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                thumbnails: list[tuple[int, str]] = []
                page.on(
                    "response",
                    lambda r: (
                        thumbnails.append((r.status, r.url)) if "/thumbnail" in r.url else None
                    ),
                )
                uid = study.truth.study_instance_uid
                page.goto(f"{server.url}/viewer?StudyInstanceUIDs={uid}", timeout=60_000)
                image = page.locator("[data-cy='study-browser-thumbnail'] img").first
                wait_for_series_list(page, image)
                page.wait_for_function(
                    "e => e.complete && e.naturalWidth > 0",
                    arg=image.element_handle(),
                    timeout=30_000,
                )
                size = image.evaluate("e => [e.naturalWidth, e.naturalHeight]")
                page.screenshot(path=str(tmp_path / "ohif-thumbnails.png"))
            finally:
                browser.close()
    finally:
        server.stop()
        gateway.stop()
    served = [url for status, url in thumbnails if status == 200]
    assert served, f"thumbnail answers: {thumbnails}; log:\n{gateway.log()[-3000:]}"
    # The square CT fills the square viewport OHIF asks for (``viewport=256,256`` in 3.13).
    asked = parse_qs(urlsplit(served[0]).query).get("viewport", ["128,128"])[0]
    assert size == [int(side) for side in asked.split(",")]
