"""Masks -> DICOM Segmentation (PS3.3 A.51), binary or fractional, on highdicom."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from sr_writer.findings import AlgorithmIdentification, SegmentDescription
from sr_writer.uids import ResultUIDs


def build_seg(
    mask: np.ndarray,
    source_images: Sequence[Dataset],
    segments: Sequence[SegmentDescription],
    algorithm: AlgorithmIdentification,
    *,
    segmentation_type: Literal["BINARY", "FRACTIONAL"] = "BINARY",
    uids: ResultUIDs | None = None,
    series_number: int = 9002,
    instance_number: int = 1,
) -> Dataset:
    """Build a SEG over ``source_images`` (header-only datasets are enough).

    ``mask`` is (frames, rows, columns) or (frames, rows, columns, segments); plane ``i`` lies
    on ``source_images[i]``. BINARY: booleans/0-1 per segment, or one integer label map whose
    value k is segment k. FRACTIONAL: floats in [0, 1]. Segment numbers are 1..n in the order
    of ``segments``.
    """
    raise NotImplementedError("build_seg: implementation follows")
