"""Results -> ``sr_writer`` findings, and the SEG's mask and segments.

Each lesion of a mask output is one finding (a TID 1410 planar ROI group, which OHIF draws):
its region is a CIRCLE on the slice through its centroid, of the same area as the lesion's
cross-section there, and it carries Volume (mm3),
Diameter with derivation Maximum (mm) and Attenuation Coefficient with derivation Mean (HU),
PS3.16 CID 7470/7472 and TID 1419. Each lesion is also a segment of the SEG; finding and
segment share their tracking identifier and tracking UID, so a reader can pair them.

A class-probability output is one image-less finding (TID 1501) whose qualitative evaluation
(by default "Presence of property") is the decided class's concept (Present or Absent for
the bundled classifier) and whose probability is the model's score for the finding class; a
scalar output is one finding with one measurement. No lesion and no other output: an empty
list, which ``sr_writer`` writes as the "no finding" report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from inference_service.manifest import Concept, ModelManifest
from inference_service.postprocess import ClassResult, MaskResult, Result, ScalarResult
from inference_service.volume import Volume
from sr_writer import (
    AlgorithmIdentification,
    CodedConcept,
    Evidence,
    Finding,
    Findings,
    ImageRegion,
    Measurement,
    QualitativeEvaluation,
    SegmentDescription,
    derive_uid,
)

#: Station Name of every SR and SEG the service stores: how a PACS tells fedgate's results
#: from other instances (deploy/orthanc/forward-to-fedgate.lua matches this exact value).
RESULTS_STATION_NAME = "FEDGATE"

VOLUME = CodedConcept(value="118565006", scheme_designator="SCT", meaning="Volume")
DIAMETER = CodedConcept(value="81827009", scheme_designator="SCT", meaning="Diameter")
ATTENUATION = CodedConcept(
    value="112031", scheme_designator="DCM", meaning="Attenuation Coefficient"
)
MAXIMUM = CodedConcept(value="56851009", scheme_designator="SCT", meaning="Maximum")
MEAN = CodedConcept(value="373098007", scheme_designator="SCT", meaning="Mean")
CUBIC_MILLIMETER = CodedConcept(value="mm3", scheme_designator="UCUM", meaning="cubic millimeter")
MILLIMETER = CodedConcept(value="mm", scheme_designator="UCUM", meaning="millimeter")


def coded(concept: Concept) -> CodedConcept:
    return CodedConcept(
        value=concept.value, scheme_designator=concept.scheme_designator, meaning=concept.meaning
    )


def algorithm_of(manifest: ModelManifest) -> AlgorithmIdentification:
    return AlgorithmIdentification(
        name=manifest.name,
        version=manifest.version,
        uid=manifest.algorithm_uid,
        manufacturer=manifest.manufacturer,
    )


@dataclass(frozen=True)
class SegPlan:
    """What the SEG holds: a label map on the source slices (value k = segment k)."""

    labels: np.ndarray
    segments: tuple[SegmentDescription, ...]


def _outline(volume: Volume, result: MaskResult, label: int, centre: np.ndarray) -> ImageRegion:
    """A CIRCLE on the slice nearest the centroid, of the area of the lesion's cross-section."""
    slice_index = int(np.clip(round(float(centre[0])), 0, volume.values.shape[0] - 1))
    section = result.labels[slice_index] == label
    if not section.any():  # the centroid's slice may miss a lesion only in odd shapes
        counts = (result.labels == label).sum(axis=(1, 2))
        slice_index = int(np.argmax(counts))
        section = result.labels[slice_index] == label
    rows, columns = np.nonzero(section)
    _, row_spacing, column_spacing = volume.spacing_mm
    radius_mm = math.sqrt(section.sum() * row_spacing * column_spacing / math.pi)
    # Image coordinates: (column, row) with (0, 0) the top left corner of the top left pixel,
    # so a pixel's centre is at +0.5 (PS3.3 C.18.6.1.1). A CIRCLE is its centre and one point
    # on it (C.18.6.1.2); the point lies along the row, so its radius is in column spacings.
    centre_column, centre_row = float(columns.mean()) + 0.5, float(rows.mean()) + 0.5
    edge_column = min(centre_column + radius_mm / column_spacing, float(section.shape[1]))
    return ImageRegion(
        graphic_type="CIRCLE",
        points=((centre_column, centre_row), (edge_column, centre_row)),
        sop_instance_uid=str(volume.datasets[slice_index].SOPInstanceUID),
    )


def _lesion_findings(
    volume: Volume, result: MaskResult, sr_uid: str
) -> tuple[list[Finding], SegPlan | None]:
    output = result.output
    findings: list[Finding] = []
    segments: list[SegmentDescription] = []
    for index, lesion in enumerate(result.lesions, start=1):
        identifier = f"{output.segment_label} {index}"
        tracking_uid = derive_uid("fedgate-lesion", sr_uid, index)
        # The centroid in voxel indices, for the outline's slice.
        centre = np.linalg.solve(
            (np.diag(volume.spacing_mm) @ volume.directions).T,
            np.asarray(lesion.centroid_mm) - volume.origin_mm,
        )
        measurements: list[Measurement] = []
        if output.measurements.volume:
            measurements.append(
                Measurement(name=VOLUME, value=round(lesion.volume_mm3, 2), unit=CUBIC_MILLIMETER)
            )
        if output.measurements.diameter:
            measurements.append(
                Measurement(
                    name=DIAMETER,
                    value=round(lesion.diameter_mm, 2),
                    unit=MILLIMETER,
                    derivation=MAXIMUM,
                )
            )
        if output.measurements.mean_intensity:
            measurements.append(
                Measurement(
                    name=ATTENUATION,
                    value=round(lesion.mean_value, 1),
                    unit=coded(output.intensity_unit),
                    derivation=MEAN,
                )
            )
        findings.append(
            Finding(
                finding_type=coded(output.finding_type),
                finding_site=coded(output.finding_site) if output.finding_site else None,
                tracking_identifier=identifier,
                tracking_uid=tracking_uid,
                measurements=tuple(measurements),
                region=_outline(volume, result, lesion.label, centre),
            )
        )
        segments.append(
            SegmentDescription(
                number=index,
                label=identifier,
                category=coded(output.segment_category),
                type=coded(output.segment_type),
                tracking_identifier=identifier,
                tracking_uid=tracking_uid,
            )
        )
    if not segments:
        return findings, None
    return findings, SegPlan(result.labels, tuple(segments))


def _class_finding(result: ClassResult) -> Finding:
    output = result.output
    decided = next(c for c in output.classes if c.label == result.decided_class)
    return Finding(
        finding_type=coded(output.finding_type),
        tracking_identifier=f"{output.finding_type.meaning} classification"[:64],
        qualitative_evaluations=(
            QualitativeEvaluation(name=coded(output.evaluation), value=coded(decided.concept)),
        ),
        probability=round(result.finding_probability, 6),
    )


def _scalar_finding(result: ScalarResult) -> Finding:
    output = result.output
    return Finding(
        finding_type=coded(output.finding_type),
        tracking_identifier=output.measurement.meaning[:64],
        measurements=(
            Measurement(
                name=coded(output.measurement), value=result.value, unit=coded(output.unit)
            ),
        ),
    )


def build_findings(
    manifest: ModelManifest,
    volume: Volume,
    results: list[Result],
    sr_uid: str,
    evidence: list[Dataset],
) -> tuple[Findings, SegPlan | None]:
    findings: list[Finding] = []
    seg: SegPlan | None = None
    for result in results:
        if isinstance(result, MaskResult):
            lesion_findings, seg = _lesion_findings(volume, result, sr_uid)
            findings += lesion_findings
        elif isinstance(result, ClassResult):
            findings.append(_class_finding(result))
        else:
            findings.append(_scalar_finding(result))
    report = Findings(
        algorithm=algorithm_of(manifest),
        evidence=Evidence.from_datasets(evidence),
        findings=tuple(findings),
    )
    return report, seg
