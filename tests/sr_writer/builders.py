"""Findings for the phantom's lesions, as an AI model would report them (used by several tests)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from fedgate.phantom import Lesion, Phantom
from sr_writer import (
    AlgorithmIdentification,
    Evidence,
    Finding,
    Findings,
    ImageRegion,
    Measurement,
    QualitativeEvaluation,
    codes,
)

ALGORITHM = AlgorithmIdentification(
    name="lung-nodule-detector",
    version="1.2.0",
    uid="2.25.1234567890123456789",
    manufacturer="fedgate tests",
    parameters=("threshold=0.5",),
)


def lesion_slice(phantom: Phantom, lesion: Lesion, datasets: list[Dataset]) -> Dataset:
    """The slice whose position is closest to the lesion's centre."""
    return min(
        datasets, key=lambda ds: abs(float(ds.ImagePositionPatient[2]) - lesion.center_mm[2])
    )


def lesion_circle(phantom: Phantom, lesion: Lesion, image: Dataset) -> ImageRegion:
    """A CIRCLE around the lesion on ``image``, in pixel coordinates (PS3.3 C.18.6.1.1)."""
    x0, y0 = float(image.ImagePositionPatient[0]), float(image.ImagePositionPatient[1])
    spacing = phantom.spec.pixel_spacing_mm
    # Pixel (i, j) covers [i, i+1) x [j, j+1): its centre is at +0.5.
    column = (lesion.center_mm[0] - x0) / spacing + 0.5
    row = (lesion.center_mm[1] - y0) / spacing + 0.5
    radius = lesion.diameter_mm / 2.0 / spacing
    return ImageRegion(
        graphic_type="CIRCLE",
        points=((column, row), (column + radius, row)),
        sop_instance_uid=str(image.SOPInstanceUID),
    )


def lesion_findings(phantom: Phantom, datasets: list[Dataset]) -> Findings:
    """One planar ROI finding per lesion: nodule in the lung, its diameter, present, probability."""
    findings = []
    for number, lesion in enumerate(phantom.truth.lesions, start=1):
        image = lesion_slice(phantom, lesion, datasets)
        findings.append(
            Finding(
                finding_type=codes.NODULE,
                finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                finding_site=codes.LUNG,
                laterality=codes.LEFT if lesion.center_mm[0] > 0 else codes.RIGHT,
                tracking_identifier=f"Nodule {number}",
                measurements=(
                    Measurement(
                        name=codes.DIAMETER, value=lesion.diameter_mm, unit=codes.MILLIMETER
                    ),
                ),
                qualitative_evaluations=(
                    QualitativeEvaluation(name=codes.PRESENCE, value=codes.PRESENT),
                ),
                probability=0.87,
                region=lesion_circle(phantom, lesion, image),
            )
        )
    return Findings(
        algorithm=ALGORITHM,
        evidence=Evidence.from_datasets(datasets),
        findings=tuple(findings),
    )
