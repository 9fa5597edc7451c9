"""Cohort attributes read from an instance's header (PS3.3 C.7.1.1 Patient, C.7.2.1 General
Study, C.7.3.1 General Series, C.7.5.1 General Equipment modules).

Only what a cohort is built from is kept: sex, age at the study in years, the study date,
modality, body part, manufacturer and model. Names, identifiers, institution and the birth
date are read only to compute keys and the age, and are not stored.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from gateway.index.keys import Pseudonymizer
from gateway.index.records import SeriesRecord, StudyRecord
from tabular.demographics import demographics
from tabular.demographics import text as _text


class MissingIdentity(ValueError):
    """An instance without the UIDs the index is keyed by (it cannot be placed in a study)."""


def study_record(dataset: Dataset, keys: Pseudonymizer) -> StudyRecord:
    study_uid = _text(dataset, "StudyInstanceUID")
    if study_uid is None:
        raise MissingIdentity("instance has no StudyInstanceUID")
    patient_id = _text(dataset, "PatientID") or ""
    issuer = _text(dataset, "IssuerOfPatientID") or ""
    facts = demographics(dataset)
    return StudyRecord(
        study_key=keys.study(study_uid),
        # A study without PatientID is its own patient: never merged with strangers.
        patient_key=keys.patient(patient_id, issuer)
        if patient_id
        else keys.key("patient-of-study", study_uid),
        patient_sex=facts.sex,
        age_years=facts.age_years,
        study_date=facts.study_date,
    )


def series_record(dataset: Dataset, study: StudyRecord, keys: Pseudonymizer) -> SeriesRecord:
    series_uid = _text(dataset, "SeriesInstanceUID")
    if series_uid is None:
        raise MissingIdentity("instance has no SeriesInstanceUID")
    modality = _text(dataset, "Modality")
    body_part = _text(dataset, "BodyPartExamined")
    return SeriesRecord(
        series_key=keys.series(series_uid),
        study_key=study.study_key,
        patient_key=study.patient_key,
        modality=modality.upper() if modality else None,
        body_part=body_part.upper() if body_part else None,
        manufacturer=_text(dataset, "Manufacturer"),
        manufacturer_model=_text(dataset, "ManufacturerModelName"),
    )
