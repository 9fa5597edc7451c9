"""A training plan's features and label: what each is and where its value comes from.

The plan (``gateway.learning.plan``) lists them; the model a federation trains carries them in
its ``model.yaml`` (``tabular.features``), so that the inference service computes a new
study's inputs from the same definitions (:mod:`tabular.extraction`). Codes are
``SCHEME:CODE`` strings, as the findings index and the cohort language write them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CODE_PATTERN",
    "AgeFeature",
    "ClinicalFeature",
    "Code",
    "Feature",
    "Label",
    "MeasurementFeature",
    "PresenceFeature",
    "SexFeature",
]

CODE_PATTERN = r"^[A-Za-z0-9_.\-]{1,16}:[^:\s]{1,64}$"
Code = Annotated[str, Field(pattern=CODE_PATTERN, description="SCHEME:CODE, e.g. SCT:27925004")]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Unit = Annotated[str, Field(min_length=1, max_length=32)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AgeFeature(_Model):
    """Age at the study in whole years (per patient: at the patient's latest study in the
    cohort)."""

    name: Name
    source: Literal["age"]


class SexFeature(_Model):
    """1 for male, 0 for female, missing otherwise (PatientSex O, or not given)."""

    name: Name
    source: Literal["sex"]


class MeasurementFeature(_Model):
    """A measurement of the AI's (or a radiologist's) findings of one type, in ``unit``,
    reduced over the unit's findings: ``max`` (the largest nodule), ``sum``, ``mean``, or
    ``count`` (how many findings of the type; 0 where a report says none is present)."""

    name: Name
    source: Literal["measurement"]
    finding_type: Code
    concept: Code | None = None
    unit: Unit | None = None
    reduce: Literal["max", "sum", "mean", "count"] = "max"
    algorithm: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _measured(self) -> MeasurementFeature:
        if self.reduce != "count" and (self.concept is None or self.unit is None):
            raise ValueError(f"reduce {self.reduce!r} needs concept and unit")
        return self


class PresenceFeature(_Model):
    """1 where a finding of the type is present, 0 where a report says it is absent (or an
    algorithm that reports the type found nothing), missing where nothing was reported."""

    name: Name
    source: Literal["presence"]
    finding_type: Code
    algorithm: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class ClinicalFeature(_Model):
    """A clinical variable from clinical-information SRs (``fedgate convert clinical``, ECG
    measurements alike): numeric in ``unit``, or, with ``equals``, 1 where the coded value is
    that code and 0 where it is another. The patient's latest value (by study date) is used."""

    name: Name
    source: Literal["clinical"]
    concept: Code
    unit: Unit | None = None
    equals: Code | None = None

    @model_validator(mode="after")
    def _numeric_or_coded(self) -> ClinicalFeature:
        if (self.unit is None) == (self.equals is None):
            raise ValueError("give unit (a numeric variable) or equals (a coded one), not both")
        return self


Feature = Annotated[
    AgeFeature | SexFeature | MeasurementFeature | PresenceFeature | ClinicalFeature,
    Field(discriminator="source"),
]


class Label(_Model):
    """The binary outcome: a coded clinical value that ``equals`` a code (1) or another
    (0), or a numeric one at or above ``at_least`` (1) or below (0)."""

    source: Literal["clinical"] = "clinical"
    concept: Code
    equals: Code | None = None
    unit: Unit | None = None
    at_least: float | None = None

    @model_validator(mode="after")
    def _coded_or_threshold(self) -> Label:
        coded = self.equals is not None
        numeric = self.unit is not None and self.at_least is not None
        if coded == numeric:
            raise ValueError("give equals (a coded outcome) or unit and at_least, not both")
        return self
