"""Patient and study attributes from the PACS, so converted objects match what it holds.

When the converters STOW to a PACS, they first ask it (QIDO-RS) what it knows:

- the named study must belong to the same PatientID, else the object is refused: a
  patient's ECG or clinical values must never be filed in another patient's study;
- the study's attributes (date, time, accession number, Study ID, referring physician) and
  the patient's (name, birth date, sex) are copied, so the new instances agree with the
  imaging instances and the PACS sees no conflicting patient or study attributes;
- the Series Numbers the study's series use, so a new series takes one of its own.

Attributes the PACS knows win over those of the input table; a difference is logged. A
destination that does not answer QIDO-RS (a STOW-only router) is not asked again: the objects
are sent with the input's attributes, and a warning says the patient check was not made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import requests
import structlog
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from fedgate.convert.identity import PatientStudy

log = structlog.get_logger(__name__)

# PatientStudy field -> DICOM keyword, for what QIDO-RS returns at study level.
_PATIENT_FIELDS = {
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
}
_STUDY_FIELDS = {
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "study_id": "StudyID",
    "referring_physician_name": "ReferringPhysicianName",
}


class PatientMismatch(ValueError):
    """The named study belongs to another patient in the PACS."""


class PacsDirectory:
    """QIDO-RS look-ups against one DICOMweb root, each study and patient asked once."""

    def __init__(self, client: DICOMwebClient) -> None:
        self.client = client
        self._studies: dict[str, Dataset | None] = {}
        self._patients: dict[str, Dataset | None] = {}
        self._series_numbers: dict[str, dict[str, int]] = {}
        self._unavailable = False

    def complete(self, identity: PatientStudy, study_named: bool) -> PatientStudy:
        """``identity`` with the PACS's patient (and, if ``study_named``, study) attributes."""
        updates: dict[str, Any] = {}
        if study_named:
            study = self._study(identity.study_instance_uid)
            if study is not None:
                pacs_patient = str(study.get("PatientID", ""))
                if pacs_patient != identity.patient_id:
                    raise PatientMismatch(
                        f"study {identity.study_instance_uid} belongs to another PatientID in "
                        f"the PACS ({pacs_patient!r}), not {identity.patient_id!r}"
                    )
                updates.update(_values(study, _STUDY_FIELDS))
                updates.update(_values(study, _PATIENT_FIELDS))
        if not updates:
            patient = self._patient(identity.patient_id)
            if patient is not None:
                updates.update(_values(patient, _PATIENT_FIELDS))
        for name, value in updates.items():
            given = getattr(identity, name)
            if given and given != value:
                log.warning("pacs_attribute_differs", attribute=name, input=given, pacs=value)
        return dataclasses.replace(identity, **updates)

    def series_number(self, study_uid: str, series_uid: str, first: int) -> int:
        """The Series Number for ``series_uid`` in the study: its own if the PACS holds the
        series already (a re-run), else the first from ``first`` on that no series of the
        study uses (or given out by this directory before). ``first`` when the PACS cannot
        be asked."""
        if study_uid not in self._series_numbers:
            self._series_numbers[study_uid] = self._numbers_in(study_uid)
        taken = self._series_numbers[study_uid]
        if series_uid in taken:
            return taken[series_uid]
        used = set(taken.values())
        number = first
        while number in used:
            number += 1
        taken[series_uid] = number
        return number

    def _numbers_in(self, study_uid: str) -> dict[str, int]:
        if self._unavailable:
            return {}
        try:
            found = self.client.search_for_series(
                study_uid, fields=["SeriesInstanceUID", "SeriesNumber"]
            )
        except requests.RequestException as error:
            if error.response is not None and error.response.status_code == 404:
                return {}  # a study the PACS does not hold yet
            self._unavailable = True
            log.warning(
                "qido_unavailable",
                reason=f"{type(error).__name__}: {error}",
                consequence="series numbers not checked against the PACS",
            )
            return {}
        numbers = {}
        for item in found:
            series = Dataset.from_json(item)
            if series.get("SeriesNumber") not in (None, ""):
                numbers[str(series.SeriesInstanceUID)] = int(series.SeriesNumber)
        return numbers

    def _study(self, study_uid: str) -> Dataset | None:
        if study_uid not in self._studies:
            self._studies[study_uid] = self._first_study(
                {"StudyInstanceUID": study_uid},
                ["PatientID", *_PATIENT_FIELDS.values(), *_STUDY_FIELDS.values()],
            )
        return self._studies[study_uid]

    def _patient(self, patient_id: str) -> Dataset | None:
        if patient_id not in self._patients:
            self._patients[patient_id] = self._first_study(
                {"PatientID": patient_id}, ["PatientID", *_PATIENT_FIELDS.values()]
            )
        return self._patients[patient_id]

    def _first_study(self, filters: dict[str, str], fields: list[str]) -> Dataset | None:
        if self._unavailable:
            return None
        try:
            found = self.client.search_for_studies(search_filters=filters, fields=fields, limit=1)
        except requests.RequestException as error:
            self._unavailable = True
            log.warning(
                "qido_unavailable",
                reason=f"{type(error).__name__}: {error}",
                consequence="patient/study attributes not checked against the PACS",
            )
            return None
        return Dataset.from_json(found[0]) if found else None


def _values(dataset: Dataset, fields: dict[str, str]) -> dict[str, str]:
    values = {}
    for name, keyword in fields.items():
        value = dataset.get(keyword)
        if value not in (None, ""):
            values[name] = str(value)
    return values
