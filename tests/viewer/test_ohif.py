"""The viewer a radiologist uses shows the SR: OHIF 3.13 in headless Chromium (issue 3).

The phantom study and the SR this library wrote go into a real Orthanc over STOW-RS; OHIF's
prebuilt dist/ is served same-origin with a DICOMweb proxy to Orthanc (tests/viewer/ohif_server);
Chromium opens the study, the test double-clicks the SR series and checks that the measurement
text and the ROI are drawn. The screenshot is saved in the test's output folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from fedgate.phantom import Phantom
from sr_writer import build_sr
from tests.sr_writer.builders import lesion_findings
from tests.sr_writer.npm import OHIF_DIST, ensure_node_packages
from tests.support.orthanc import OrthancServer
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


@pytest.fixture
def ohif(orthanc: OrthancServer) -> Iterator[OhifServer]:
    ensure_node_packages()
    server = OhifServer(OHIF_DIST, orthanc.dicomweb_url).start()
    try:
        yield server
    finally:
        server.stop()


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
            skip = page.get_by_text("Skip all")
            try:
                skip.wait_for(timeout=20_000)
                skip.click()
            except Exception:
                pass
            # The investigational-use banner covers part of the viewport.
            confirm = page.get_by_text("Confirm and hide")
            if confirm.count():
                confirm.first.click()
            sr_thumbnail = page.locator("[data-cy='study-browser-thumbnail-no-image']").first
            sr_thumbnail.wait_for(timeout=60_000)
            sr_thumbnail.dblclick()
            viewport = page.locator(".cornerstone-viewport-element, [data-viewport-uid]").first
            deadline = time.monotonic() + 60
            text = ""
            while time.monotonic() < deadline:
                # Headless, the annotation is drawn only after a pointer event over the image.
                box = viewport.bounding_box()
                if box:
                    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                    page.mouse.move(box["x"] + box["width"] / 3, box["y"] + box["height"] / 3)
                text = page.inner_text("body")
                if "Diameter: 12.30 mm" in text:
                    break
                page.wait_for_timeout(1000)
            page.wait_for_timeout(1000)
            screenshot = tmp_path / "ohif-sr.png"
            print(f"screenshot: {screenshot}", flush=True)
            page.screenshot(path=str(screenshot))
            (tmp_path / "ohif-page.txt").write_text(text)
            roi_shapes = page.locator(
                "svg.svg-layer circle, svg.svg-layer ellipse, svg.svg-layer path"
            ).count()
        finally:
            browser.close()

    print(f"screenshot: {screenshot}")
    assert "Diameter: 12.30 mm" in text, f"see {screenshot}; page text:\n{text[:2000]}"
    assert roi_shapes > 0, f"no ROI drawn; see {screenshot}"
