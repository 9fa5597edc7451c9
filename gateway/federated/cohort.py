"""The cohort language: who is counted, as a conjunction of filters (JSON model).

A cohort is a conjunction of

- DICOM attribute filters with QIDO-RS matching (:mod:`.matching`) on the attributes the index
  keeps: ``ModalitiesInStudy``, ``Modality``, ``BodyPartExamined``, ``Manufacturer``,
  ``ManufacturerModelName``, ``PatientSex``, ``PatientAge`` (years at the study) and
  ``StudyDate`` (ranges only meaningful as ranges: no date is ever returned);
- finding filters: a finding in the same study with this type, site, qualitative values and
  numeric measurements in a range (units converted by UCUM where simple), which the report
  says is present (the default), absent, or either (``presence``; see
  :mod:`tabular.presence` for how absence is read);
- presence filters across all of a patient's studies (``patient_has``): "has an MR study",
  "has a nodule somewhere", which make multi-modal cohorts.

Identifying attributes (names, IDs, UIDs, accession numbers, birth dates) are refused by name.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.federated.matching import (
    FilterError,
    Matcher,
    Range,
    age_matcher,
    code_list_matcher,
    date_matcher,
    text_matcher,
)
from tabular.features import CODE_PATTERN, Code
from tabular.units import canonical, canonical_unit

#: A JSON number: not a string or a boolean that pydantic would read as one (``false`` is not 0).
Number = Annotated[float, Strict()]


#: Study-level attributes -> column of ``studies``.
STUDY_ATTRIBUTES = {
    "PatientSex": "patient_sex",
    "PatientAge": "age_years",
    "StudyDate": "study_date",
}
#: Series-level attributes -> column of ``series``.
SERIES_ATTRIBUTES = {
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model",
}
#: Matched against any series of the study (QIDO's study-level ModalitiesInStudy).
STUDY_SERIES_ATTRIBUTES = {"ModalitiesInStudy": "modality"}
COHORT_ATTRIBUTES = sorted({*STUDY_ATTRIBUTES, *SERIES_ATTRIBUTES, *STUDY_SERIES_ATTRIBUTES})

#: Attributes that identify a person or an object: never a filter, whatever the value.
IDENTIFYING_ATTRIBUTES = frozenset(
    {
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientBirthTime",
        "AccessionNumber",
        "IssuerOfPatientID",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "StudyID",
        "StudyTime",
        "SeriesTime",
        "AcquisitionDateTime",
        "ContentDate",
        "InstitutionName",
        "InstitutionAddress",
        "StationName",
        "DeviceSerialNumber",
        "MedicalRecordLocator",
        "AdmissionID",
        "StudyDescription",
        "SeriesDescription",
        "PatientComments",
    }
)

#: Query parameters that ask for rows, not aggregates (QIDO-RS 8.3.4, 8.3.5): refused.
ROW_PARAMETERS = frozenset({"includefield", "limit", "offset", "fuzzymatching"})

SEXES = {"F", "M", "O"}


def is_identifying(keyword: str) -> bool:
    return keyword in IDENTIFYING_ATTRIBUTES or keyword.endswith(("UID", "UIDs"))


def check_attribute_keyword(keyword: str) -> None:
    """Raise FilterError naming ``keyword`` unless it is a cohort attribute."""
    if is_identifying(keyword):
        raise FilterError(keyword, "identifying attribute: not accepted as a cohort filter")
    if keyword.lower() in ROW_PARAMETERS:
        raise FilterError(keyword, "row-level query parameter: only aggregates are answered")
    if keyword not in COHORT_ATTRIBUTES:
        raise FilterError(
            keyword, f"not a cohort attribute (accepted: {', '.join(COHORT_ATTRIBUTES)})"
        )


def attribute_matcher(keyword: str, value: str | list[str]) -> Matcher:
    check_attribute_keyword(keyword)
    if keyword == "PatientSex":
        return code_list_matcher(keyword, value, SEXES)
    if isinstance(value, list) and keyword in {"PatientAge", "StudyDate"}:
        raise FilterError(keyword, "give one range (e.g. 20240101-20241231), not a list")
    if keyword == "PatientAge":
        return age_matcher(keyword, str(value))
    if keyword == "StudyDate":
        return date_matcher(keyword, str(value))
    if keyword in {"Modality", "ModalitiesInStudy", "BodyPartExamined"}:
        value = [v.upper() for v in value] if isinstance(value, list) else value.upper()
    return text_matcher(keyword, value)


class _Model(BaseModel):
    # Python's JSON reader takes NaN and Infinity, which no bound, bin or clamp can be: every
    # number of a request is finite (400 naming the field, not a 500 from arithmetic on it).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MeasurementFilter(_Model):
    """A numeric measurement of the finding within ``[min, max]`` in ``unit`` (UCUM)."""

    concept: Code
    min: Number | None = None
    max: Number | None = None
    unit: Annotated[str, Field(min_length=1, max_length=32)]

    @model_validator(mode="after")
    def _bounded(self) -> MeasurementFilter:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self


class QualitativeFilter(_Model):
    concept: Code
    value: Code


#: ``present``: the report says the finding is there (a "Nodule" group whose Presence is Absent
#: is not a nodule); ``absent``: a report says it is not there, either by a group whose
#: presence is denied or by a report of an algorithm that reports this type and found nothing;
#: ``any``: either.
PresenceName = Literal["present", "absent", "any"]
PRESENCE_NAMES: tuple[PresenceName, ...] = ("present", "absent", "any")


class FindingFilter(_Model):
    """A finding (TID 1500 measurement group) in the study satisfying all of these."""

    type: Code | None = None
    presence: PresenceName = "present"
    site: Code | None = None
    qualitative: tuple[QualitativeFilter, ...] = ()
    measurements: tuple[MeasurementFilter, ...] = ()
    algorithm: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    #: Only findings of this algorithm version (TID 4019 Algorithm Version), e.g. with
    #: ``algorithm`` "the nodule detector's 2.1.0 results".
    algorithm_version: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class PresenceFilter(_Model):
    """Across all studies of the patient: has any study of each modality / each finding."""

    modalities: tuple[Annotated[str, Field(pattern=r"^[A-Z0-9]{1,16}$")], ...] = ()
    findings: tuple[FindingFilter, ...] = ()


class Cohort(_Model):
    attributes: dict[str, str | list[str]] = Field(default_factory=dict)
    findings: tuple[FindingFilter, ...] = ()
    patient_has: PresenceFilter | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes_are_cohort_attributes(
        cls, attributes: dict[str, str | list[str]]
    ) -> dict[str, str | list[str]]:
        for keyword, value in attributes.items():
            try:
                attribute_matcher(keyword, value)
            except FilterError as error:
                raise ValueError(str(error)) from None
        return attributes

    def matchers(self) -> dict[str, Matcher]:
        return {k: attribute_matcher(k, v) for k, v in sorted(self.attributes.items())}

    def definition(self) -> dict[str, Any]:
        """A canonical form: two cohorts written differently but alike compare equal
        (attribute values parsed, measurement ranges in canonical units, filters sorted)."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data["attributes"] = {k: _canonical_matcher(m) for k, m in self.matchers().items()}
        data["findings"] = sorted((_canonical_finding(f) for f in self.findings), key=str)
        if self.patient_has is not None:
            data["patient_has"] = {
                "modalities": sorted(self.patient_has.modalities),
                "findings": sorted(
                    (_canonical_finding(f) for f in self.patient_has.findings), key=str
                ),
            }
        return data


def _canonical_finding(finding: FindingFilter) -> dict[str, Any]:
    data = finding.model_dump(mode="json", exclude_defaults=True)
    data["measurements"] = sorted(
        (
            {
                "concept": m.concept,
                "unit": canonical_unit(m.unit),
                "min": None if m.min is None else canonical(m.min, m.unit)[0],
                "max": None if m.max is None else canonical(m.max, m.unit)[0],
            }
            for m in finding.measurements
        ),
        key=str,
    )
    data["qualitative"] = sorted((q.model_dump() for q in finding.qualitative), key=str)
    return data


def _canonical_matcher(matcher: Matcher) -> Any:
    if isinstance(matcher, Range):
        return [matcher.low, matcher.high]
    if hasattr(matcher, "values"):
        return sorted(matcher.values)
    return matcher.pattern


Level = Literal["patients", "studies", "series"]

CategoryName = Literal[
    "modality",
    "body_part",
    "sex",
    "study_year",
    "finding_type",
    "finding_site",
    "qualitative",
    "algorithm",
]

#: Categories whose values are known in advance: every one is listed, 0 shown as suppressed.
#: The others are open: a value is listed only when at least one of its cells is released, so
#: that a rare value (one patient's unusual finding) is not revealed by its mere presence.
FIXED_CATEGORIES: dict[str, tuple[str, ...]] = {"sex": ("F", "M", "O")}


class CategoryDimension(_Model):
    kind: Literal["category"] = "category"
    name: CategoryName
    #: For ``qualitative``: which qualitative evaluation (its concept name).
    concept: Code | None = None

    @model_validator(mode="after")
    def _concept_when_needed(self) -> CategoryDimension:
        if self.name == "qualitative" and self.concept is None:
            raise ValueError("a qualitative dimension needs 'concept' (SCHEME:CODE)")
        return self


class BinnedDimension(_Model):
    """Equal-width bins ``[start + i*width, start + (i+1)*width)`` over ``[start, stop)``."""

    kind: Literal["bins"] = "bins"
    of: Literal["age", "measurement"]
    concept: Code | None = None
    unit: str | None = None
    start: Number
    stop: Number
    width: Annotated[Number, Field(gt=0)]

    @field_validator("width")
    @classmethod
    def _countable(cls, width: float, info: ValidationInfo) -> float:
        start, stop = info.data.get("start"), info.data.get("stop")
        if start is not None and stop is not None and not math.isfinite((stop - start) / width):
            # 5e-324 wide, or a range wider than a float holds: the bin count is not a number.
            raise ValueError("too small: the range from start to stop has no countable bins")
        return width

    @model_validator(mode="after")
    def _consistent(self) -> BinnedDimension:
        if self.stop <= self.start:
            raise ValueError("stop must be greater than start")
        if self.of == "measurement" and (self.concept is None or self.unit is None):
            raise ValueError("a measurement dimension needs 'concept' and 'unit'")
        return self

    @property
    def bin_count(self) -> int:
        return int(-(-(self.stop - self.start) // self.width))


Dimension = Annotated[CategoryDimension | BinnedDimension, Field(discriminator="kind")]


class CountSpec(_Model):
    kind: Literal["count"] = "count"


class HistogramSpec(_Model):
    kind: Literal["histogram"] = "histogram"
    by: Dimension


class CrossTabSpec(_Model):
    kind: Literal["crosstab"] = "crosstab"
    rows: Dimension
    columns: Dimension


class SummarySpec(_Model):
    """Mean and standard deviation (and, under differential privacy only, quantiles).

    ``lower``/``upper`` clamp the values (needed to bound one patient's influence under DP).
    """

    kind: Literal["summary"] = "summary"
    of: Literal["age", "measurement"]
    concept: Code | None = None
    unit: str | None = None
    lower: Number
    upper: Number
    quantiles: tuple[Annotated[Number, Field(gt=0, lt=1)], ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> SummarySpec:
        if self.upper <= self.lower:
            raise ValueError("upper must be greater than lower")
        if self.of == "measurement" and (self.concept is None or self.unit is None):
            raise ValueError("a measurement summary needs 'concept' and 'unit'")
        return self


class VocabularySpec(_Model):
    """Every value a cohort builder may offer (modalities, body parts, manufacturers, finding
    types and sites, algorithms, measurement and qualitative concepts, clinical variables),
    each with the distinct patients of the cohort holding it, through the disclosure control:
    a rare value is never listed (``GET /vocabulary`` is this over all patients)."""

    kind: Literal["vocabulary"] = "vocabulary"


AggregateSpec = Annotated[
    CountSpec | HistogramSpec | CrossTabSpec | SummarySpec | VocabularySpec,
    Field(discriminator="kind"),
]


class AggregateRequest(_Model):
    """``POST /federated/v1/aggregate``: a cohort, the level counted, and the aggregate."""

    cohort: Cohort = Field(default_factory=Cohort)
    level: Level = "patients"
    aggregate: AggregateSpec = Field(default_factory=CountSpec)

    @field_validator("aggregate")
    @classmethod
    def _vocabulary_counts_patients(cls, aggregate: Any, info: ValidationInfo) -> Any:
        # A value is rare or common by its distinct patients (the unit of privacy), whatever
        # else a cohort's answers count.
        if isinstance(aggregate, VocabularySpec) and info.data.get("level") != "patients":
            raise ValueError("a vocabulary counts patients: level must be 'patients'")
        return aggregate


def parse_code(field: str, text: str) -> str:
    if not re.fullmatch(CODE_PATTERN, text):
        raise FilterError(field, f"{text!r} is not SCHEME:CODE (e.g. SCT:27925004)")
    return text
