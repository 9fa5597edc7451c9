"""Synthetic multi-site cohorts with a known truth, for federated learning
(``fedgate phantom --sites 3``).

Each site's patients have a chest CT with lung nodules (a :mod:`fedgate.phantom` series: the
patient's sex, age and study date are the phantom's own), a clinical-information SR (smoking
status, LVEF, and the outcome), and a 12-lead ECG with its measurements (heart rate, QTc) in an
SR of the ECG's study. The outcome, lung cancer diagnosed, is drawn from a known logistic model
of those features (:data:`TRUE_MODEL`), so what a federation learns can be measured against the
model that generated the data. Sites differ in their case mix (smoking prevalence, age), not in
the model: the federation's task is learnable and its data not identically distributed.

Two ways in:

- :func:`cohort_instances` yields the DICOM instances (CT, clinical SR, ECG and its SR); sent to
  a gateway, its pipeline's nodule detector measures the nodules as it would at a hospital.
- :func:`write_cohort_to_index` writes the same patients straight into a findings index, with the
  nodules as if the detector had measured them exactly: thousands of patients in seconds, for
  tests and benchmarks of learning itself.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from fedgate.convert.ecg import build_ecg
from fedgate.convert.ecg_input import EcgRecording
from fedgate.phantom import PhantomSpec, derived_uid, generate_phantom
from gateway.index import (
    FindingRecord,
    FindingsIndex,
    MeasurementRecord,
    ReportRecord,
    SeriesRecord,
    StudyRecord,
)
from sr_writer.clinical import ClinicalInformationReport, ClinicalValue, CodedValue, NumericValue
from tabular.presence import ABSENT
from tabular.records import clinical_finding_record

__all__ = [
    "CODES",
    "TRUE_MODEL",
    "CohortPatient",
    "cohort_instances",
    "generate_cohort",
    "true_probability",
    "write_cohort_to_index",
]

#: The codes of the cohort's clinical variables and findings (SCHEME:CODE, as the index has
#: them; a training plan names features by these).
CODES = {
    "smoking_status": "LN:72166-2",  # Tobacco smoking status
    "current_smoker": "SCT:77176002",  # Smoker
    "ex_smoker": "SCT:8517006",  # Ex-smoker
    "never_smoker": "SCT:266919005",  # Never smoked tobacco
    "lvef": "LN:10230-1",  # Left ventricular Ejection fraction, %
    "heart_rate": "LN:8867-4",  # Heart rate, /min
    "qtc": "LN:8636-3",  # QT interval corrected, ms
    "diagnosis": "LN:29308-4",  # Diagnosis
    "lung_cancer": "SCT:363358000",  # Malignant tumor of lung
    "no_diagnosis": "SCT:260413007",  # None
    "nodule": "SCT:27925004",
    "lung": "SCT:39607008",
    "diameter": "SCT:81827009",
    "volume": "SCT:118565006",
}

#: The model the outcome is drawn from: logit = intercept + sum(coefficient * feature), with
#: the features on the scales a plan reads them (years, 0/1, %, mm, ms). A patient without a
#: nodule has a largest nodule diameter of 0.
TRUE_MODEL: dict[str, float] = {
    "intercept": -5.5,
    "age": 0.04,
    "male": 0.4,
    "current_smoker": 1.2,
    "lvef": -0.03,
    "nodule_diameter": 0.15,
    "qtc": 0.006,
}

#: What the bundled nodule detector calls itself in its SRs (models/nodule-detector).
DETECTOR = ("nodule-detector", "1.0.0")

#: Per site (1, 2, 3, then cycling): share of current and ex-smokers. Case mix differs by site.
_SMOKING_BY_SITE = ((0.18, 0.25), (0.28, 0.25), (0.38, 0.22))


@dataclass(frozen=True)
class CohortPatient:
    site: int
    seed: int
    patient_id: str
    sex: str
    age: int
    study_date: str  # YYYYMMDD of the CT
    smoking: str  # "current_smoker" | "ex_smoker" | "never_smoker"
    lvef: float
    heart_rate: float
    qtc: float
    nodule_diameters_mm: tuple[float, ...]
    probability: float
    lung_cancer: bool

    @property
    def largest_nodule_mm(self) -> float:
        return max(self.nodule_diameters_mm, default=0.0)


def true_probability(
    *,
    age: float,
    male: float,
    current_smoker: float,
    lvef: float,
    nodule_diameter: float,
    qtc: float,
) -> float:
    model = TRUE_MODEL
    logit = (
        model["intercept"]
        + model["age"] * age
        + model["male"] * male
        + model["current_smoker"] * current_smoker
        + model["lvef"] * lvef
        + model["nodule_diameter"] * nodule_diameter
        + model["qtc"] * qtc
    )
    return 1.0 / (1.0 + math.exp(-logit))


def generate_cohort(site: int, patients: int, seed: int = 0) -> list[CohortPatient]:
    """``patients`` patients of site ``site`` (1, 2, ...): the same arguments give the same
    patients; different sites never share a patient."""
    cohort = []
    current_share, ex_share = _SMOKING_BY_SITE[(site - 1) % len(_SMOKING_BY_SITE)]
    for number in range(patients):
        patient_seed = site * 1_000_000 + seed * 10_000 + number
        rng = np.random.default_rng(patient_seed)
        draw = rng.random()
        smoking = (
            "current_smoker"
            if draw < current_share
            else "ex_smoker"
            if draw < current_share + ex_share
            else "never_smoker"
        )
        nodules = int(min(3, rng.poisson(0.5 + 0.8 * (smoking == "current_smoker"))))
        diameters = tuple(round(float(rng.uniform(6.0, 20.0)), 1) for _ in range(nodules))
        truth = generate_phantom(_spec(patient_seed, diameters)).truth
        lvef = round(float(np.clip(rng.normal(58.0, 8.0), 20.0, 75.0)), 1)
        heart_rate = round(float(np.clip(rng.normal(72.0, 10.0), 40.0, 140.0)), 1)
        qtc = round(float(np.clip(rng.normal(420.0, 25.0), 340.0, 520.0)), 1)
        probability = true_probability(
            age=truth.patient_age_years,
            male=1.0 if truth.patient_sex == "M" else 0.0,
            current_smoker=1.0 if smoking == "current_smoker" else 0.0,
            lvef=lvef,
            nodule_diameter=max(diameters, default=0.0),
            qtc=qtc,
        )
        cohort.append(
            CohortPatient(
                site=site,
                seed=patient_seed,
                patient_id=truth.patient_id,
                sex=truth.patient_sex,
                age=truth.patient_age_years,
                study_date=truth.study_date,
                smoking=smoking,
                lvef=lvef,
                heart_rate=heart_rate,
                qtc=qtc,
                nodule_diameters_mm=diameters,
                probability=probability,
                lung_cancer=bool(rng.random() < probability),
            )
        )
    return cohort


def _spec(seed: int, diameters: tuple[float, ...]) -> PhantomSpec:
    """A small chest CT (128 x 128 x 32, 2.5 mm voxels, 1 MB): fine enough for the bundled
    detector to measure 6-20 mm nodules, small enough for hundreds of patients per site."""
    return PhantomSpec(
        seed=seed,
        rows=128,
        columns=128,
        slices=32,
        pixel_spacing_mm=2.5,
        slice_thickness_mm=2.5,
        lesion_diameters_mm=diameters,
    )


def _code(key: str, meaning: str) -> Code:
    scheme, value = CODES[key].split(":", 1)
    return Code(value, scheme, meaning)


def _clinical_values(patient: CohortPatient) -> list[ClinicalValue]:
    smoking_meanings = {
        "current_smoker": "Smoker",
        "ex_smoker": "Ex-smoker",
        "never_smoker": "Never smoked tobacco",
    }
    outcome = (
        _code("lung_cancer", "Malignant tumor of lung")
        if patient.lung_cancer
        else _code("no_diagnosis", "None")
    )
    return [
        CodedValue(
            _code("smoking_status", "Tobacco smoking status"),
            _code(patient.smoking, smoking_meanings[patient.smoking]),
        ),
        NumericValue(
            _code("lvef", "Left ventricular Ejection fraction"),
            patient.lvef,
            Code("%", "UCUM", "percent"),
        ),
        CodedValue(_code("diagnosis", "Diagnosis"), outcome),
    ]


def _ecg_values(patient: CohortPatient) -> list[ClinicalValue]:
    return [
        NumericValue(
            _code("heart_rate", "Heart rate"),
            patient.heart_rate,
            Code("/min", "UCUM", "per minute"),
        ),
        NumericValue(
            _code("qtc", "QT interval corrected"), patient.qtc, Code("ms", "UCUM", "millisecond")
        ),
    ]


def _ecg_recording(patient: CohortPatient) -> EcgRecording:
    """Ten seconds of a 12-lead ECG at 500 Hz: P, QRS and T waves as Gaussians at the
    patient's heart rate (a test signal with the right shape, not a physiological model)."""
    rate, seconds = 500.0, 10.0
    t = np.arange(int(rate * seconds)) / rate
    beat = 60.0 / patient.heart_rate
    phase = np.mod(t, beat)
    qt = patient.qtc / 1000.0 * math.sqrt(beat)  # Bazett, backwards

    def wave(centre: float, width: float, height: float) -> np.ndarray:
        return height * np.exp(-0.5 * ((phase - centre) / width) ** 2)

    signal = wave(0.10, 0.02, 0.15) + wave(0.20, 0.01, 1.1) + wave(0.20 + qt - 0.08, 0.04, 0.3)
    leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    gains = (0.6, 1.0, 0.4, -0.8, 0.3, 0.7, -0.5, 0.2, 0.6, 1.1, 1.0, 0.8)
    samples = np.column_stack([gain * signal for gain in gains])
    return EcgRecording(
        source=f"phantom-ecg-{patient.seed}",
        leads=leads,
        samples=samples,
        units=("mV",) * len(leads),
        sampling_frequency=rate,
        resolutions=(0.001,) * len(leads),
        acquisition_datetime=dt.datetime.strptime(patient.study_date, "%Y%m%d"),
    )


def _clinical_report(
    values: list[ClinicalValue], patient: CohortPatient, study_uid: str, series_number: int
) -> Dataset:
    part = f"clinical-{series_number}"
    return ClinicalInformationReport(
        values,
        patient_id=patient.patient_id,
        patient_sex=patient.sex,
        study_instance_uid=study_uid,
        series_instance_uid=derived_uid(patient.seed, part, "series"),
        sop_instance_uid=derived_uid(patient.seed, part, "instance"),
        tracking_uid=derived_uid(patient.seed, part, "tracking"),
        device_observer_uid=derived_uid("fedgate phantom cohort"),
        series_number=series_number,
        study_date=patient.study_date,
    )


def cohort_instances(patient: CohortPatient) -> Iterator[Dataset]:
    """The patient's instances: the CT series, its clinical SR, the ECG and its measurements."""
    phantom = generate_phantom(_spec(patient.seed, patient.nodule_diameters_mm))
    yield from phantom.instances()
    study_uid = phantom.truth.study_instance_uid
    yield _clinical_report(_clinical_values(patient), patient, study_uid, series_number=8001)
    ecg = build_ecg(_ecg_recording(patient), patient_id=patient.patient_id)
    ecg.PatientSex = patient.sex
    yield ecg
    yield _clinical_report(
        _ecg_values(patient), patient, str(ecg.StudyInstanceUID), series_number=8002
    )


def write_cohort_to_index(index: FindingsIndex, patients: list[CohortPatient]) -> None:
    """The patients' rows, as the gateway would index their instances and the detector's SRs
    (the nodules measured exactly), written straight into ``index``."""
    keys = index.keys
    studies: list[StudyRecord] = []
    series: list[SeriesRecord] = []
    reports: list[ReportRecord] = []
    for patient in patients:
        patient_key = keys.patient(patient.patient_id)
        date = int(patient.study_date)
        ct_study = keys.study(f"{patient.patient_id}/ct")
        ecg_study = keys.study(f"{patient.patient_id}/ecg")
        studies += [
            StudyRecord(ct_study, patient_key, patient.sex, patient.age, date),
            StudyRecord(ecg_study, patient_key, patient.sex, patient.age, date),
        ]
        for study, modality in ((ct_study, "CT"), (ct_study, "SR"), (ecg_study, "ECG")):
            series.append(
                SeriesRecord(
                    keys.series(f"{patient.patient_id}/{modality}/{study}"),
                    study,
                    patient_key,
                    modality,
                    "CHEST" if modality == "CT" else None,
                    "fedgate phantom",
                    "Synthetic",
                )
            )
        reports += [
            ReportRecord(
                keys.report(f"{patient.patient_id}/nodules"),
                ct_study,
                patient_key,
                _detector_findings(patient),
            ),
            ReportRecord(
                keys.report(f"{patient.patient_id}/clinical"),
                ct_study,
                patient_key,
                [clinical_finding_record(_clinical_values(patient))],
            ),
            ReportRecord(
                keys.report(f"{patient.patient_id}/ecg"),
                ecg_study,
                patient_key,
                [clinical_finding_record(_ecg_values(patient))],
            ),
        ]
    index.write(studies, series, reports)


def _detector_findings(patient: CohortPatient) -> list[FindingRecord]:
    name, version = DETECTOR
    if not patient.nodule_diameters_mm:
        return [
            FindingRecord(
                finding_type=None, algorithm_name=name, algorithm_version=version, presence=ABSENT
            )
        ]
    return [
        FindingRecord(
            finding_type=CODES["nodule"],
            finding_site=CODES["lung"],
            measurements=(
                MeasurementRecord(CODES["diameter"], diameter, "mm"),
                MeasurementRecord(CODES["volume"], math.pi / 6.0 * diameter**3, "mm3"),
            ),
            algorithm_name=name,
            algorithm_version=version,
        )
        for diameter in patient.nodule_diameters_mm
    ]
