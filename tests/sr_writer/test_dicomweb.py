"""What build_sr/build_seg return goes through a real archive intact (DESIGN.md, interop trap).

dicomweb-client's store_instances sends a dataset built in memory without preamble and "DICM"
unless ``ds.preamble`` is set; Orthanc 1.10 would store that verbatim and pydicom (so WADO-RS
retrieve) would refuse it. The writers set the preamble and file meta; this stores an SR and a
SEG in Orthanc over STOW-RS, retrieves them over WADO-RS and reads the findings back.
"""

from __future__ import annotations

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from fedgate.phantom import Phantom
from sr_writer import (
    Evidence,
    SegmentDescription,
    SegmentRegion,
    build_seg,
    build_sr,
    codes,
    read_findings,
)
from tests.sr_writer.builders import ALGORITHM, lesion_findings
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.orthanc


def test_stow_then_wado_round_trip(
    lesion_phantom: Phantom, header_only: list[Dataset], orthanc: OrthancServer
) -> None:
    mask = np.zeros((len(header_only), 128, 128), dtype=bool)
    mask[10:13, 40:50, 40:50] = True
    seg = build_seg(
        mask,
        header_only,
        [
            SegmentDescription(
                number=1,
                label="Nodule",
                category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                type=codes.NODULE,
            )
        ],
        ALGORITHM,
    )
    planar = lesion_findings(lesion_phantom, header_only)
    findings = planar.model_copy(
        update={
            "evidence": Evidence.from_datasets([*header_only, seg]),
            "findings": (
                *planar.findings,
                planar.findings[0].model_copy(
                    update={
                        "tracking_identifier": "Nodule 1 (SEG)",
                        "region": SegmentRegion(
                            sop_instance_uid=seg.SOPInstanceUID, segment_number=1
                        ),
                    }
                ),
            ),
        }
    )
    sr = build_sr(findings, [*header_only, seg])

    client = DICOMwebClient(url=orthanc.dicomweb_url)
    stored = client.store_instances([sr, seg])
    # What was stored, not only the status (DESIGN.md, lessons from peers).
    assert {item.ReferencedSOPInstanceUID for item in stored.ReferencedSOPSequence} == {
        sr.SOPInstanceUID,
        seg.SOPInstanceUID,
    }
    retrieved_sr = client.retrieve_instance(
        sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID
    )
    retrieved_seg = client.retrieve_instance(
        seg.StudyInstanceUID, seg.SeriesInstanceUID, seg.SOPInstanceUID
    )
    assert read_findings(retrieved_sr).model_dump(exclude={"report"}) == read_findings(
        sr
    ).model_dump(exclude={"report"})
    assert retrieved_seg.SegmentSequence[0].SegmentLabel == "Nodule"
    assert int(retrieved_seg.NumberOfFrames) == 3

    # A re-run (same model, same version) replaces: the archive still holds one SR.
    client.store_instances([build_sr(findings, [*header_only, seg])])
    series = client.search_for_instances(
        study_instance_uid=sr.StudyInstanceUID, series_instance_uid=sr.SeriesInstanceUID
    )
    assert len(series) == 1
