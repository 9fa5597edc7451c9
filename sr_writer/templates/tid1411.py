"""TID 1411 Volumetric ROI Measurements and Qualitative Evaluations (PS3.16 TID 1411).

The region is a segment of a DICOM Segmentation ("Referenced Segment") or a volume surface
(SCOORD3D ELLIPSOID). Note: OHIF 3.13 does not draw TID 1411 groups that reference a SEG; it
shows the SEG itself. A finding that should be seen in OHIF also needs a TID 1410 group.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np

from sr_writer.findings import SegmentRegion, VolumeRegion
from sr_writer.templates.tid1501 import GroupContent


def volumetric_roi_group(
    content: GroupContent, region: SegmentRegion | VolumeRegion, source_series_uid: str
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    source_series = hd.sr.SourceSeriesForSegmentation(source_series_uid)
    if isinstance(region, SegmentRegion):
        segment = hd.sr.ReferencedSegment(
            sop_class_uid=region.sop_class_uid,
            sop_instance_uid=region.sop_instance_uid,
            segment_number=region.segment_number,
            source_series=source_series,
        )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=segment,
            **content.arguments(),  # type: ignore[arg-type]
        )
    surface = hd.sr.VolumeSurface(
        graphic_type=hd.sr.GraphicTypeValues3D[region.graphic_type],
        graphic_data=np.asarray(region.points, dtype=np.float64),
        frame_of_reference_uid=region.frame_of_reference_uid,
        source_series=source_series,
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        referenced_volume_surface=surface,
        **content.arguments(),  # type: ignore[arg-type]
    )
