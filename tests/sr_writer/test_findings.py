"""The findings model and the result UIDs: what they accept, refuse and normalise."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pydantic import ValidationError

from sr_writer import (
    Finding,
    ImageRegion,
    Measurement,
    VolumeRegion,
    codes,
    derive_result_uids,
)
from sr_writer.findings import UID_PATTERN


def nodule(**changes: object) -> Finding:
    return Finding.model_validate(
        {"finding_type": codes.NODULE, "tracking_identifier": "Nodule 1", **changes}
    )


def test_result_uids_are_valid_deterministic_and_distinct() -> None:
    uids = derive_result_uids("1.2.3", "1.2.3.4", "2.25.9", "1.0.0")
    again = derive_result_uids("1.2.3", "1.2.3.4", "2.25.9", "1.0.0")
    newer = derive_result_uids("1.2.3", "1.2.3.4", "2.25.9", "1.0.1")
    other_series = derive_result_uids("1.2.3", "1.2.3.5", "2.25.9", "1.0.0")
    assert uids == again
    values = [
        uids.sr_series_instance_uid,
        uids.sr_sop_instance_uid,
        uids.seg_series_instance_uid,
        uids.seg_sop_instance_uid,
    ]
    assert len(set(values)) == 4
    assert all(re.fullmatch(UID_PATTERN, v) and len(v) <= 64 for v in values)
    assert newer.sr_sop_instance_uid != uids.sr_sop_instance_uid
    assert other_series.sr_sop_instance_uid != uids.sr_sop_instance_uid


def test_coordinates_are_kept_as_dicom_stores_them() -> None:
    """Graphic Data is FL (32-bit): the model rounds, so write -> read compares equal."""
    region = ImageRegion(
        graphic_type="POINT", points=[(10.123456789, 20.1)], sop_instance_uid="1.2.3"
    )
    assert region.points[0][0] == float(np.float32(10.123456789))


def test_probability_is_kept_to_six_decimals() -> None:
    assert nodule(probability=0.87345678).probability == 0.873457
    with pytest.raises(ValidationError, match="probability"):
        nodule(probability=1.2)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"laterality": codes.LEFT}, "laterality qualifies a finding site"),
        ({"finding_type": codes.NO_ABNORMALITY}, "empty findings list"),
        (
            {"measurements": [Measurement(name=codes.PROBABILITY, value=0.5, unit=codes.UNITY)]},
            "use Finding.probability",
        ),
        (
            {
                "region": {
                    "kind": "image",
                    "graphic_type": "MULTIPOINT",
                    "points": [(1, 1)],
                    "sop_instance_uid": "1.2.3",
                }
            },
            "graphic_type",
        ),
        (
            {
                "region": {
                    "kind": "image",
                    "graphic_type": "ELLIPSE",
                    "points": [(1, 1)] * 3,
                    "sop_instance_uid": "1.2.3",
                }
            },
            "needs 4 points",
        ),
    ],
)
def test_findings_the_model_refuses(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        nodule(**changes)


def test_3d_polygons_must_be_closed_and_planar() -> None:
    square = [(0, 0, 0), (10, 0, 0), (10, 10, 0), (0, 10, 0)]
    VolumeRegion(
        graphic_type="POLYGON", points=[*square, square[0]], frame_of_reference_uid="1.2.3"
    )
    with pytest.raises(ValidationError, match="closed"):
        VolumeRegion(graphic_type="POLYGON", points=square, frame_of_reference_uid="1.2.3")
    warped = [(0, 0, 0), (10, 0, 0), (10, 10, 5), (0, 10, 0), (0, 0, 0)]
    with pytest.raises(ValidationError, match="one plane"):
        VolumeRegion(graphic_type="POLYGON", points=warped, frame_of_reference_uid="1.2.3")


def test_units_must_be_ucum() -> None:
    with pytest.raises(ValidationError, match="UCUM"):
        Measurement(name=codes.DIAMETER, value=1.0, unit=codes.NODULE)


def test_text_is_trimmed_and_single_valued() -> None:
    """DICOM drops padding spaces and splits values at backslashes: the model does the same
    trimming, and refuses a backslash instead of writing two values."""
    assert nodule(tracking_identifier="  Nodule 1 ").tracking_identifier == "Nodule 1"
    with pytest.raises(ValidationError, match="tracking_identifier"):
        nodule(tracking_identifier="left\\right")
