"""Index rows written straight into a findings index: cohorts whose truth the test knows.

Studies are written through :meth:`FindingsIndex.write`, the same call the intake path ends
in, so the index under test is the real one; only the DICOM parsing is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from gateway.index import (
    FindingRecord,
    FindingsIndex,
    MeasurementRecord,
    ReportRecord,
    SeriesRecord,
    StudyRecord,
)

NODULE = "SCT:27925004"
MASS = "SCT:4147007"
DIAMETER = "SCT:81827009"
LUNG = "SCT:39607008"
MALIGNANCY = "SCT:444814009"
SUSPICIOUS = "SCT:263654008"


@dataclass
class SyntheticFinding:
    finding_type: str | None = NODULE  # None: a clinical-information report's finding
    diameter_mm: float | None = None
    qualitative: tuple[tuple[str, str], ...] = ()
    site: str | None = LUNG
    algorithm_version: str = "1.0"


@dataclass
class SyntheticStudy:
    date: int = 20240315
    modalities: tuple[str, ...] = ("CT",)
    body_part: str = "CHEST"
    age: int | None = 65
    findings: list[SyntheticFinding] = field(default_factory=list)
    manufacturer: str = "fedgate phantom"


@dataclass
class SyntheticPatient:
    patient_id: str
    sex: str | None = "F"
    studies: list[SyntheticStudy] = field(default_factory=lambda: [SyntheticStudy()])


def write_patients(index: FindingsIndex, patients: list[SyntheticPatient]) -> None:
    studies: list[StudyRecord] = []
    series: list[SeriesRecord] = []
    reports: list[ReportRecord] = []
    keys = index.keys
    for patient in patients:
        patient_key = keys.patient(patient.patient_id)
        for number, study in enumerate(patient.studies):
            uid = f"{patient.patient_id}/study/{number}"
            study_key = keys.study(uid)
            studies.append(StudyRecord(study_key, patient_key, patient.sex, study.age, study.date))
            for modality in study.modalities:
                series.append(
                    SeriesRecord(
                        keys.series(f"{uid}/{modality}"),
                        study_key,
                        patient_key,
                        modality,
                        study.body_part,
                        study.manufacturer,
                        "Synthetic",
                    )
                )
            if study.findings:
                reports.append(
                    ReportRecord(
                        report_key=keys.report(f"{uid}/sr"),
                        study_key=study_key,
                        patient_key=patient_key,
                        findings=[
                            FindingRecord(
                                finding_type=f.finding_type,
                                finding_site=f.site,
                                qualitative=f.qualitative,
                                measurements=(
                                    (MeasurementRecord(DIAMETER, f.diameter_mm, "mm"),)
                                    if f.diameter_mm is not None
                                    else ()
                                ),
                                algorithm_name="lung-nodules",
                                algorithm_version=f.algorithm_version,
                            )
                            for f in study.findings
                        ],
                    )
                )
    index.write(studies, series, reports)


def small_phantom(seed: int, lesions: tuple[float, ...] = (12.0,)) -> Phantom:
    """A quick phantom study (64x64x8) with lesions of these diameters."""
    return generate_phantom(
        PhantomSpec(
            seed=seed,
            rows=64,
            columns=64,
            slices=8,
            pixel_spacing_mm=4.0,
            slice_thickness_mm=5.0,
            lesion_diameters_mm=lesions,
        )
    )


def header_only(phantom: Phantom) -> list[Dataset]:
    """The phantom's instances without pixel data, as the intake path hands them over."""
    datasets = list(phantom.instances())
    for dataset in datasets:
        del dataset.PixelData
    return datasets


def diameter_summary(lower: float, upper: float) -> dict[str, object]:
    """The aggregate "mean and SD of the nodules' diameters, clamped to [lower, upper] mm"."""
    return {
        "kind": "summary",
        "of": "measurement",
        "concept": DIAMETER,
        "unit": "mm",
        "lower": lower,
        "upper": upper,
    }
