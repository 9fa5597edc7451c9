"""sr_writer: AI findings to DICOM SR (TID 1500) and SEG, and back. A library: no server.

Public API (stable names)::

    from sr_writer import Findings, Finding, build_sr, build_seg, read_findings, derive_result_uids

- :func:`build_sr` — findings -> Comprehensive 3D SR, TID 1500 (PS3.16 A.3), see :mod:`.tid1500`;
- :func:`build_seg` — masks -> Segmentation (PS3.3 A.51), see :mod:`.seg`;
- :func:`read_findings` — any TID 1500 SR -> findings, see :mod:`.reader`;
- :func:`derive_result_uids` — deterministic SR/SEG UIDs (a re-run replaces), see :mod:`.uids`.
"""

from sr_writer.errors import (
    EmptyMaskError,
    FindingsError,
    GraphicOutsideImageError,
    InvalidValueError,
    MissingValueError,
    NonFiniteValueError,
    NotMeasurementReportError,
    ReferenceNotInEvidenceError,
    ValueTooLongError,
)
from sr_writer.findings import (
    AlgorithmIdentification,
    CodedConcept,
    Evidence,
    Finding,
    Findings,
    ImageRegion,
    Measurement,
    QualitativeEvaluation,
    Region,
    ReportReference,
    SegmentDescription,
    SegmentRegion,
    SourceInstance,
    VolumeRegion,
)
from sr_writer.reader import read_findings
from sr_writer.seg import build_seg
from sr_writer.tid1500 import build_sr
from sr_writer.uids import ResultUIDs, derive_result_uids, derive_uid

__all__ = [
    "AlgorithmIdentification",
    "CodedConcept",
    "EmptyMaskError",
    "Evidence",
    "Finding",
    "Findings",
    "FindingsError",
    "GraphicOutsideImageError",
    "ImageRegion",
    "InvalidValueError",
    "Measurement",
    "MissingValueError",
    "NonFiniteValueError",
    "NotMeasurementReportError",
    "QualitativeEvaluation",
    "ReferenceNotInEvidenceError",
    "Region",
    "ReportReference",
    "ResultUIDs",
    "SegmentDescription",
    "SegmentRegion",
    "SourceInstance",
    "ValueTooLongError",
    "VolumeRegion",
    "build_seg",
    "build_sr",
    "derive_result_uids",
    "derive_uid",
    "read_findings",
]
