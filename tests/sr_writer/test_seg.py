"""build_seg: binary and fractional SEGs that dciodvfy accepts, referenced by TID 1411 groups."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from fedgate.phantom import Phantom
from sr_writer import (
    Evidence,
    Finding,
    Findings,
    Measurement,
    SegmentDescription,
    SegmentRegion,
    build_seg,
    build_sr,
    codes,
    derive_result_uids,
    read_findings,
)
from tests.sr_writer.builders import ALGORITHM
from tests.sr_writer.dicomtools import assert_conformant, dcmdump, dsrdump


def sphere_masks(phantom: Phantom, datasets: list[Dataset]) -> np.ndarray:
    """(slices, rows, columns, lesions) fraction of each voxel's centre inside each lesion."""
    spacing = phantom.spec.pixel_spacing_mm
    x0, y0 = (float(v) for v in datasets[0].ImagePositionPatient[:2])
    xs = x0 + np.arange(phantom.spec.columns) * spacing
    ys = y0 + np.arange(phantom.spec.rows) * spacing
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in datasets])
    zz, yy, xx = np.meshgrid(zs, ys, xs, indexing="ij")
    planes = []
    for lesion in phantom.truth.lesions:
        cx, cy, cz = lesion.center_mm
        distance = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2)
        # A soft edge one pixel wide: a probability map as a model would output it.
        planes.append(np.clip(lesion.diameter_mm / 2 - distance + 0.5, 0.0, 1.0))
    return np.stack(planes, axis=-1).astype(np.float32)


def segments(count: int) -> list[SegmentDescription]:
    return [
        SegmentDescription(
            number=n,
            label=f"Nodule {n}",
            category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            type=codes.NODULE,
            tracking_identifier=f"Nodule {n}",
        )
        for n in range(1, count + 1)
    ]


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL"])
def test_seg_is_conformant_and_holds_the_mask(
    kind: str, lesion_phantom: Phantom, header_only: list[Dataset], tmp_path: Path
) -> None:
    fractions = sphere_masks(lesion_phantom, header_only)
    mask = fractions >= 0.5 if kind == "BINARY" else fractions
    seg = build_seg(mask, header_only, segments(2), ALGORITHM, segmentation_type=kind)  # type: ignore[arg-type]
    path = tmp_path / f"{kind}.dcm"
    seg.save_as(path, enforce_file_format=True)

    assert_conformant(path)
    dump = dcmdump(path)
    assert f"[{kind}]" in dump and "[Nodule 1]" in dump and "[Nodule 2]" in dump
    truth = lesion_phantom.truth
    uids = derive_result_uids(
        truth.study_instance_uid, truth.series_instance_uid, ALGORITHM.uid, ALGORITHM.version
    )
    assert seg.SOPInstanceUID == uids.seg_sop_instance_uid
    # Each segment has a recommended display colour (viewers warn without one), all distinct.
    colors = [tuple(item.RecommendedDisplayCIELabValue) for item in seg.SegmentSequence]
    assert len(set(colors)) == 2
    assert seg.SeriesInstanceUID == uids.seg_series_instance_uid
    # OHIF loads a SEG only with a correct ReferencedSeriesSequence (DESIGN.md).
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == truth.series_instance_uid
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} <= set(
        truth.sop_instance_uids
    )

    # Read back with highdicom: the same voxels per segment, on the same source images.
    back = hd.seg.segread(path)
    for number in (1, 2):
        volume = back.get_pixels_by_source_instance(
            source_sop_instance_uids=list(truth.sop_instance_uids),
            segment_numbers=[number],
            rescale_fractional=True,
        )[..., 0]
        expected = mask[..., number - 1]
        if kind == "BINARY":
            assert np.array_equal(volume.astype(bool), expected)
        else:
            assert np.abs(volume - expected).max() <= 1 / 255 / 2 + 1e-6  # stored as 0..255


def test_label_map_mask(
    lesion_phantom: Phantom, header_only: list[Dataset], tmp_path: Path
) -> None:
    fractions = sphere_masks(lesion_phantom, header_only) >= 0.5
    labels = np.zeros(fractions.shape[:3], dtype=np.uint8)
    labels[fractions[..., 0]] = 1
    labels[fractions[..., 1]] = 2
    seg = build_seg(labels, header_only, segments(2), ALGORITHM)
    path = tmp_path / "labels.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert_conformant(path)
    assert "[Nodule 2]" in dcmdump(path)
    assert [s.SegmentNumber for s in seg.SegmentSequence] == [1, 2]
    assert int(seg.NumberOfFrames) == int(fractions[..., 0].any(axis=(1, 2)).sum()) + int(
        fractions[..., 1].any(axis=(1, 2)).sum()
    )


def test_sr_references_the_seg_segments_tid1411(
    lesion_phantom: Phantom, header_only: list[Dataset], tmp_path: Path
) -> None:
    mask = sphere_masks(lesion_phantom, header_only) >= 0.5
    seg = build_seg(mask, header_only, segments(2), ALGORITHM)
    voxel_mm3 = lesion_phantom.spec.pixel_spacing_mm**2 * lesion_phantom.spec.slice_thickness_mm
    findings = Findings(
        algorithm=ALGORITHM,
        evidence=Evidence.from_datasets([*header_only, seg]),
        findings=tuple(
            Finding(
                finding_type=codes.NODULE,
                tracking_identifier=f"Nodule {n}",
                measurements=(
                    Measurement(
                        name=codes.VOLUME,
                        value=float(mask[..., n - 1].sum() * voxel_mm3),
                        unit=codes.CUBIC_MILLIMETER,
                    ),
                ),
                region=SegmentRegion(sop_instance_uid=seg.SOPInstanceUID, segment_number=n),
            )
            for n in (1, 2)
        ),
    )
    sr = build_sr(findings, [*header_only, seg])
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert_conformant(path)
    dump = dsrdump(path)
    assert 'IMAGE:(,,"Referenced Segment")=(SG image,,1)' in dump
    assert 'IMAGE:(,,"Referenced Segment")=(SG image,,2)' in dump
    read = read_findings(pydicom.dcmread(path))
    assert [f.region for f in read.findings] == [f.region for f in findings.findings]
    assert seg.SOPInstanceUID in read.evidence.sop_instance_uids
    # The SR and the SEG of one run share the study and differ in series.
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    assert sr.SeriesInstanceUID != seg.SeriesInstanceUID
