"""Findings -> Comprehensive 3D SR with a TID 1500 Measurement Report (PS3.16 A.3)."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from sr_writer.findings import Findings
from sr_writer.uids import ResultUIDs


def build_sr(
    findings: Findings,
    evidence: Sequence[Dataset],
    *,
    uids: ResultUIDs | None = None,
    series_number: int = 9001,
    instance_number: int = 1,
) -> Dataset:
    """Build the SR for ``findings`` (``evidence``: the source instances, header-only is enough).

    The SR and SEG UIDs default to :func:`sr_writer.derive_result_uids` of the evidence's study,
    the first source series, the algorithm UID and its version. The result saves as Part 10
    (preamble and file meta are set): ``ds.save_as(path, enforce_file_format=True)``.
    """
    raise NotImplementedError("build_sr: implementation follows")
