"""With a PACS, one study looks the same at every level and URL (issue 13, item 1).

The rule (docs/dicomweb.md, "Where requests go"; gateway/dicomweb/sources.py): a read naming
one study is answered by the embedded store when it holds every instance the PACS holds,
else by the PACS; never a mix. Before, a study held by the gateway was answered from its store at
``/studies/{study}/series`` but from the PACS at ``/series?StudyInstanceUID=``: an SR only
in the PACS was visible at one URL and not at the other. Real Orthanc (defaults), real gateway.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from gateway.dicomweb.sources import CHOICE_SECONDS
from sr_writer import build_sr
from tests.gateway.conftest import phantom
from tests.sr_writer.builders import lesion_findings
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.orthanc

SOP_INSTANCE_UID, SERIES_INSTANCE_UID = "00080018", "0020000E"
INSTANCES_IN_STUDY, INSTANCES_IN_SERIES = "00201208", "00201209"


@pytest.fixture
def fronted(orthanc: OrthancServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path / "gateway", {"pacs": {"url": orthanc.dicomweb_url}})
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def _get(url: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(url, params=params, headers={"Accept": "application/dicom+json"})
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text}"
    results: list[dict[str, Any]] = response.json()
    return results


def _uids(results: list[dict[str, Any]], tag: str = SOP_INSTANCE_UID) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


def what_each_url_shows(root: str, study: str) -> dict[str, Any]:
    """Every way a reader sees the study: its instances at each level, and the counts."""
    series_list = _get(f"{root}/studies/{study}/series")
    series = sorted(_uids(series_list, SERIES_INSTANCE_UID))
    studies = _get(f"{root}/studies", StudyInstanceUID=study)
    views: dict[str, Any] = {
        "study count": {int(s[INSTANCES_IN_STUDY]["Value"][0]) for s in studies},
        "series counts, study path": sum(
            int(s[INSTANCES_IN_SERIES]["Value"][0]) for s in series_list
        ),
        "series counts, /series?StudyInstanceUID": sum(
            int(s[INSTANCES_IN_SERIES]["Value"][0])
            for s in _get(f"{root}/series", StudyInstanceUID=study)
        ),
        "/series?StudyInstanceUID": sorted(
            _uids(_get(f"{root}/series", StudyInstanceUID=study), SERIES_INSTANCE_UID)
        ),
        "/studies/{study}/series": series,
        "/studies/{study}/instances": _uids(_get(f"{root}/studies/{study}/instances")),
        "/instances?StudyInstanceUID": _uids(_get(f"{root}/instances", StudyInstanceUID=study)),
        "/studies/{study}/series/{series}/instances": set().union(
            *(_uids(_get(f"{root}/studies/{study}/series/{s}/instances")) for s in series)
        ),
        "/studies/{study}/metadata": _uids(_get(f"{root}/studies/{study}/metadata")),
        "/studies/{study}/series/{series}/metadata": set().union(
            *(_uids(_get(f"{root}/studies/{study}/series/{s}/metadata")) for s in series)
        ),
    }
    return views


def assert_everywhere(views: dict[str, Any], instances: set[str], series: set[str]) -> None:
    for name, seen in views.items():
        if name.startswith("study count"):
            assert seen == {len(instances)}, name
        elif "counts" in name:
            assert seen == len(instances), name
        elif name.startswith("/series?") or name == "/studies/{study}/series":
            assert set(seen) == series, name
        else:
            assert seen == instances, name


def another_sr(sr: Dataset) -> Dataset:
    """A second report in a series of its own (another tool's SR)."""
    other = copy.deepcopy(sr)
    other.SeriesInstanceUID = generate_uid()
    other.SOPInstanceUID = generate_uid()
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    other.SeriesNumber = 9100
    return other


def test_one_study_looks_the_same_at_every_level(
    orthanc: OrthancServer, fronted: GatewayProcess
) -> None:
    lesion_phantom = phantom(seed=420, slices=8, lesion_diameters_mm=(12.0,))
    phantom_datasets = list(lesion_phantom.instances())
    study = lesion_phantom.truth.study_instance_uid
    ct = {ds.SOPInstanceUID for ds in phantom_datasets}
    ct_series = {lesion_phantom.truth.series_instance_uid}
    gateway, pacs = DICOMwebClient(fronted.dicomweb_url), DICOMwebClient(orthanc.dicomweb_url)

    # 1. The study arrived at the gateway only: its store answers, at every level.
    assert len(gateway.store_instances(phantom_datasets).ReferencedSOPSequence) == len(ct)
    assert_everywhere(what_each_url_shows(fronted.dicomweb_url, study), ct, ct_series)

    # 2. The PACS holds the study and an SR the gateway never saw: the PACS answers, and the
    #    SR is visible at every URL (it was invisible at /studies/{study}/series before).
    sr = build_sr(lesion_findings(lesion_phantom, phantom_datasets), phantom_datasets)
    stored = pacs.store_instances([*phantom_datasets, sr])
    assert len(stored.ReferencedSOPSequence) == len(ct) + 1
    time.sleep(CHOICE_SECONDS)
    both = ct | {sr.SOPInstanceUID}
    both_series = ct_series | {sr.SeriesInstanceUID}
    assert_everywhere(what_each_url_shows(fronted.dicomweb_url, study), both, both_series)

    # 3. Each holds an instance the other lacks (a report stored at the gateway, not yet in
    #    the PACS): still one answer, the PACS's, at every URL; never a mix of the two.
    late = another_sr(sr)
    assert len(gateway.store_instances([late]).ReferencedSOPSequence) == 1
    time.sleep(CHOICE_SECONDS)
    assert_everywhere(what_each_url_shows(fronted.dicomweb_url, study), both, both_series)

    # 4. Once the PACS has it too, it shows everywhere.
    assert len(pacs.store_instances([late]).ReferencedSOPSequence) == 1
    time.sleep(CHOICE_SECONDS)
    assert_everywhere(
        what_each_url_shows(fronted.dicomweb_url, study),
        both | {late.SOPInstanceUID},
        both_series | {late.SeriesInstanceUID},
    )
