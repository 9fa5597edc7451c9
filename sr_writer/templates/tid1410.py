"""TID 1410 Planar ROI Measurements and Qualitative Evaluations (PS3.16 TID 1410).

The region is a 2D graphic (SCOORD, PS3.3 C.18.6) on one source image, or a planar 3D graphic
(SCOORD3D, C.18.9) in the frame of reference. Planar ROI groups with SCOORD on the source image
are what OHIF draws (DESIGN.md, lessons from peers).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from sr_writer.findings import ImageRegion, VolumeRegion
from sr_writer.templates.tid1501 import GroupContent


def planar_roi_group(
    content: GroupContent, region: ImageRegion | VolumeRegion, evidence: dict[str, Dataset]
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    referenced: hd.sr.ImageRegion | hd.sr.ImageRegion3D
    if isinstance(region, ImageRegion):
        image = evidence[region.sop_instance_uid]
        frames = [region.frame_number] if region.frame_number is not None else None
        referenced = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues[region.graphic_type],
            graphic_data=np.asarray(region.points, dtype=np.float64),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=str(image.SOPClassUID),
                referenced_sop_instance_uid=region.sop_instance_uid,
                referenced_frame_numbers=frames,
            ),
        )
    else:
        referenced = hd.sr.ImageRegion3D(
            graphic_type=hd.sr.GraphicTypeValues3D[region.graphic_type],
            graphic_data=np.asarray(region.points, dtype=np.float64),
            frame_of_reference_uid=region.frame_of_reference_uid,
        )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        referenced_region=referenced,
        **content.arguments(),  # type: ignore[arg-type]
    )
