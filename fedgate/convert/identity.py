"""Patient and study attributes of converted objects, and their deterministic UIDs.

A converted object must land in the PACS beside the same patient's imaging: it carries the
patient's PatientID, and the imaging study's StudyInstanceUID when the input names one. When it
does not, the object opens a study of its own whose UID is derived from the patient (and, for a
recording, its content), so converting the same input again gives the same UIDs: the PACS
replaces the objects instead of storing a second copy.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from fedgate.phantom import derived_uid

__all__ = [
    "CLINICAL_SERIES_NUMBER",
    "ECG_SERIES_NUMBER",
    "PatientStudy",
    "derived_uid",
    "validate_patient_id",
    "validate_uid",
]

#: Series Numbers of the series fedgate adds to a study, apart from one another and from the
#: imaging series (numbered from 1 by modalities): the AI results are 9001 (SR) and 9002
#: (SEG, sr_writer's defaults), clinical information 9101, ECGs 9201 and up. With a PACS to
#: ask, a converter takes the first number from its own that no other series of the study
#: uses (``PacsDirectory.series_number``), so two ECGs in one study are 9201 and 9202.
CLINICAL_SERIES_NUMBER = 9101
ECG_SERIES_NUMBER = 9201

# PS3.5 9.1: components of digits, no leading zero unless the component is "0", at most 64.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SEXES = {"M", "F", "O"}


def validate_uid(value: str) -> str:
    """``value`` if it is a valid UID (PS3.5 9.1), else :class:`ValueError` naming why."""
    if len(value) > 64:
        raise ValueError(f"UID {value!r} is longer than 64 characters")
    if not _UID.match(value):
        raise ValueError(f"{value!r} is not a UID (dot-separated numbers, no leading zeros)")
    return value


def validate_patient_id(value: str) -> str:
    """``value`` stripped, if it can be a PatientID (LO: 1-64 characters, no backslash)."""
    value = value.strip()
    if not value:
        raise ValueError("PatientID is empty")
    if len(value) > 64:
        raise ValueError(f"PatientID {value[:20]!r}... is longer than 64 characters")
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError("PatientID contains a backslash or a control character")
    return value


def dicom_date(value: str) -> str:
    """A DA value (YYYYMMDD) from ``YYYYMMDD`` or ISO ``YYYY-MM-DD``."""
    text = value.strip().replace("-", "")
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD or YYYYMMDD)") from None
    return text


def patient_sex(value: str) -> str:
    text = value.strip().upper()
    if text not in _SEXES:
        raise ValueError(f"{value!r} is not a DICOM patient sex (M, F or O)")
    return text


@dataclass(frozen=True)
class PatientStudy:
    """The Patient and General Study Module attributes a converted object carries."""

    patient_id: str
    study_instance_uid: str
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    study_id: str | None = None
    referring_physician_name: str | None = None
    study_description: str | None = None

    def sop_class_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`highdicom.base.SOPClass` for these attributes."""
        return {
            "patient_id": self.patient_id,
            "study_instance_uid": self.study_instance_uid,
            "patient_name": self.patient_name,
            "patient_birth_date": self.patient_birth_date,
            "patient_sex": self.patient_sex,
            "study_date": self.study_date,
            "study_time": self.study_time,
            "accession_number": self.accession_number,
            "study_id": self.study_id,
            "referring_physician_name": self.referring_physician_name,
        }
