"""Is a received instance about the patient of the study already held? (issue 13, item 2)

A study belongs to one patient (PS3.3 C.7.1.1, C.7.2.1): an instance of a held study whose
patient attributes contradict the study's is refused by default (``ingest.patient_mismatch``),
as dcm4chee-arc does, instead of silently moving the study to another patient.

Compared: PatientID always (an empty ID differs from a filled one); IssuerOfPatientID,
PatientName, PatientBirthDate and PatientSex only where both sides have a value, so that an
instance that merely omits an optional attribute (an SR copying only part of the Patient
Module) is not refused. Names are compared as PS3.5 6.2 Person Names: trailing empty
components and padding do not count, nor does letter case.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydicom.dataset import Dataset


class PatientConflict(enum.IntEnum):
    """The failure reasons, those of dcm4chee-arc's StoreService for the same check.

    Both lie in the A7xx "Refused" range PS3.4 Annex B (Table B.2-1) gives C-STORE and
    PS3.18 10.5.3 gives STOW-RS failures, so any sender classifies them as a refusal.
    """

    PATIENT_ID = 0xA778  # dcm4chee: CONFLICTING_PID_NOT_ACCEPTED
    PATIENT_ATTRIBUTES = 0xA779  # dcm4chee: CONFLICTING_PATIENT_ATTRS_REJECTED


@dataclass(frozen=True)
class PatientIdentity:
    """The patient attributes a study is held under; None where absent or empty."""

    patient_id: str | None
    issuer_of_patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None

    @classmethod
    def of(cls, dataset: Dataset) -> PatientIdentity:
        return cls(*(_text(dataset, keyword) for keyword in KEYWORDS))

    def conflict(self, received: PatientIdentity) -> tuple[PatientConflict, str] | None:
        """The first contradiction of ``received`` with this (held) identity, in words.

        The words name the attribute and both values, except for names, of which only the
        initials are given: the message goes to the sender and to the log.
        """
        if _clean(self.patient_id) != _clean(received.patient_id):
            return PatientConflict.PATIENT_ID, _differs(
                "PatientID", self.patient_id, received.patient_id
            )
        for keyword, held, new in (
            ("IssuerOfPatientID", self.issuer_of_patient_id, received.issuer_of_patient_id),
            ("PatientBirthDate", self.patient_birth_date, received.patient_birth_date),
            ("PatientSex", self.patient_sex, received.patient_sex),
        ):
            held, new = _clean(held), _clean(new)
            if held is not None and new is not None and held != new:
                reason = (
                    PatientConflict.PATIENT_ID
                    if keyword == "IssuerOfPatientID"
                    else PatientConflict.PATIENT_ATTRIBUTES
                )
                return reason, _differs(keyword, held, new)
        held_name, new_name = self.patient_name, received.patient_name
        if held_name and new_name and _person_name(held_name) != _person_name(new_name):
            return PatientConflict.PATIENT_ATTRIBUTES, _differs(
                "PatientName", _initials(held_name), _initials(new_name)
            )
        return None


#: The attributes of :class:`PatientIdentity`, in the order of its fields.
KEYWORDS = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
)


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _clean(text: str | None) -> str | None:
    return (text or "").strip() or None


def _differs(keyword: str, held: str | None, received: str | None) -> str:
    # Short: the STOW-RS Error Comment (0000,0902) is an LO of 64 characters at most.
    return f"{keyword} {received or '(empty)'} contradicts study's {held or '(empty)'}"


def _person_name(name: str) -> str:
    """A PN value without padding and trailing empty components, for comparison."""
    groups = [group.strip().rstrip("^").strip() for group in name.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups).casefold()


def _initials(name: str) -> str:
    """``DOE^JOHN`` -> ``D.^J.``: enough to see which names differ, not who they are."""
    alphabetic = name.split("=")[0]
    return "^".join(f"{part.strip()[0]}." for part in alphabetic.split("^") if part.strip())
