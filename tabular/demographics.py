"""A study's demographics from an instance's header (PS3.3 C.7.1.1 Patient, C.7.2.1 General
Study, C.7.2.2 Patient Study modules): sex, age at the study in whole years, the study date.

The findings index keeps these per study (``gateway.index.attributes``), and a plan's ``age``
and ``sex`` features read them; the inference service reads a new study's the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataset import Dataset

__all__ = ["Demographics", "age_at", "demographics", "parse_age_string", "parse_date", "text"]

_AGE_UNITS_PER_YEAR = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.2425}


def text(dataset: Dataset, keyword: str) -> str | None:
    """An attribute's value as stripped text, None when absent or empty."""
    value = dataset.get(keyword)
    if value is None:
        return None
    stripped = str(value).strip()
    return stripped or None


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


@dataclass(frozen=True)
class Demographics:
    sex: str | None  # F, M or O
    age_years: int | None
    study_date: int | None  # YYYYMMDD


def demographics(dataset: Dataset) -> Demographics:
    """Sex (F, M, O), age at the study (Patient's Age, else from the birth date and the study
    date) and the study date of an instance's header."""
    study_date = parse_date(text(dataset, "StudyDate"))
    age = parse_age_string(text(dataset, "PatientAge"))
    if age is None and study_date is not None:
        birth = parse_date(text(dataset, "PatientBirthDate"))
        age = age_at(birth, study_date) if birth is not None else None
    sex = (text(dataset, "PatientSex") or "").upper()
    return Demographics(
        sex=sex if sex in {"F", "M", "O"} else None,
        age_years=age,
        study_date=int(study_date.strftime("%Y%m%d")) if study_date is not None else None,
    )
