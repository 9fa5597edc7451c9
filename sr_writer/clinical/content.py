"""The typed values a clinical-information report carries, and the template's fixed codes.

A value is either numeric (a number with its UCUM unit, PS3.16 TID 300 "Measurement") or coded
(a concept whose value is itself a code, TID 1501 "Qualitative Evaluation"). Both are named by a
coded concept (SNOMED CT, LOINC, DCM, ...), never by free text, so that every site that reads the
report understands the same thing by "LVEF" whatever its local column was called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.sr.coding import Code

# --- The template's fixed codes (see sr_writer/clinical/__init__.py for the whole template). ---

#: Document title (root CONTAINER concept name). TID 1500 takes its title from CID 7021, an
#: extensible group; "Clinical Information" (a CID 7001 report heading) says what this document
#: is, and is what distinguishes it from an imaging measurement report (DCM 126000).
CLINICAL_INFORMATION = Code("55752-0", "LN", "Clinical Information")

#: Procedure reported (TID 1500 row 4, CID 100, extensible): the report records a clinical
#: record, not an imaging procedure.
CLINICAL_REPORT = Code("371524004", "SCT", "Clinical report")

#: Tracking identifier text of the one measurement group (TID 1501) that holds the values.
TRACKING_IDENTIFIER = "Clinical information"

#: The coding scheme of every unit (PS3.16 CID 82 "Units of Measurement": UCUM).
UCUM = "UCUM"


@dataclass(frozen=True)
class NumericValue:
    """A number with its unit: "LVEF (LN 10230-1) = 35 %"."""

    concept: Code
    value: float
    unit: Code

    def __post_init__(self) -> None:
        if self.unit.scheme_designator != UCUM:
            raise ValueError(
                f"unit of {self.concept.meaning!r} must be a UCUM code, "
                f"got scheme {self.unit.scheme_designator!r}"
            )
        if not math.isfinite(self.value):
            raise ValueError(f"value of {self.concept.meaning!r} is not a finite number")


@dataclass(frozen=True)
class CodedValue:
    """A category: "Tobacco smoking behavior (SCT 365981007) = Former smoker (SCT 8517006)"."""

    concept: Code
    value: Code


ClinicalValue = NumericValue | CodedValue
