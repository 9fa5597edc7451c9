"""Cohort attributes read from an instance's header (PS3.3 C.7.1.1 Patient, C.7.2.1 General
Study, C.7.3.1 General Series, C.7.5.1 General Equipment modules).

Only what a cohort is built from is kept: sex, age at the study in years, the study date,
modality, body part, manufacturer and model. Names, identifiers, institution and the birth
date are read only to compute keys and the age, and are not stored.
"""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset

from gateway.index.keys import Pseudonymizer
from gateway.index.records import SeriesRecord, StudyRecord

_AGE_UNITS_PER_YEAR = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.2425}


class MissingIdentity(ValueError):
    """An instance without the UIDs the index is keyed by (it cannot be placed in a study)."""


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_date(value: str | None) -> dt.date | None:
    """A DICOM DA value (``YYYYMMDD``; the old ``YYYY.MM.DD`` form too), or None if invalid."""
    if not value:
        return None
    digits = value.replace(".", "").strip()
    try:
        return dt.datetime.strptime(digits[:8], "%Y%m%d").date()
    except ValueError:
        return None


def parse_age_string(value: str | None) -> int | None:
    """Whole years of a DICOM AS value (``065Y``, ``018M``, ``003W``, ``010D``; PS3.5 6.2)."""
    if not value or len(value) != 4 or not value[:3].isdigit():
        return None
    per_year = _AGE_UNITS_PER_YEAR.get(value[3].upper())
    if per_year is None:
        return None
    return int(int(value[:3]) / per_year)


def age_at(birth: dt.date, day: dt.date) -> int | None:
    years = day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
    return years if years >= 0 else None


def study_record(dataset: Dataset, keys: Pseudonymizer) -> StudyRecord:
    study_uid = _text(dataset, "StudyInstanceUID")
    if study_uid is None:
        raise MissingIdentity("instance has no StudyInstanceUID")
    patient_id = _text(dataset, "PatientID") or ""
    issuer = _text(dataset, "IssuerOfPatientID") or ""
    study_date = parse_date(_text(dataset, "StudyDate"))
    age = parse_age_string(_text(dataset, "PatientAge"))
    if age is None and study_date is not None:
        birth = parse_date(_text(dataset, "PatientBirthDate"))
        age = age_at(birth, study_date) if birth is not None else None
    sex = (_text(dataset, "PatientSex") or "").upper()
    return StudyRecord(
        study_key=keys.study(study_uid),
        # A study without PatientID is its own patient: never merged with strangers.
        patient_key=keys.patient(patient_id, issuer)
        if patient_id
        else keys.key("patient-of-study", study_uid),
        patient_sex=sex if sex in {"F", "M", "O"} else None,
        age_years=age,
        study_date=int(study_date.strftime("%Y%m%d")) if study_date is not None else None,
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
