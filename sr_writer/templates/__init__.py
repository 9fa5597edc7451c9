"""Measurement group templates of TID 1500 (PS3.16 A.3): one module per template.

- :mod:`.tid1501` — Measurement and Qualitative Evaluation Group (no region: image/study level),
  and the content every group shares (TID 4108 tracking, TID 4019 algorithm, TID 300 measurements);
- :mod:`.tid1410` — Planar ROI Measurements and Qualitative Evaluations (SCOORD / planar SCOORD3D);
- :mod:`.tid1411` — Volumetric ROI Measurements and Qualitative Evaluations (SEG segment, volume).
"""

from sr_writer.templates.tid1410 import planar_roi_group
from sr_writer.templates.tid1411 import volumetric_roi_group
from sr_writer.templates.tid1501 import GroupContent, measurement_group, no_finding_group

__all__ = [
    "GroupContent",
    "measurement_group",
    "no_finding_group",
    "planar_roi_group",
    "volumetric_roi_group",
]
