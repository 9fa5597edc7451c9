"""Coded concepts, taken from pydicom's code dictionaries (PS3.16 Annex D, SNOMED CT, UCUM).

No code value is written here by hand: every constant comes from :data:`pydicom.sr.codedict.codes`,
so a typo fails at import instead of producing a report with an invented code. Concepts without
a standard code come from a model's manifest with its own coding scheme designator.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from sr_writer.findings import IMAGING_PROCEDURE as IMAGING_PROCEDURE  # re-exported
from sr_writer.findings import NO_ABNORMALITY as NO_ABNORMALITY  # re-exported
from sr_writer.findings import PROBABILITY as PROBABILITY  # re-exported
from sr_writer.findings import CodedConcept


def concept(code: Code) -> CodedConcept:
    """The model's :class:`CodedConcept` for a pydicom/highdicom ``Code``."""
    return CodedConcept.from_code(code)


def to_code(coded: CodedConcept) -> Code:
    """The pydicom ``Code`` for a model's :class:`CodedConcept` (what highdicom accepts)."""
    return Code(
        value=coded.value,
        scheme_designator=coded.scheme_designator,
        meaning=coded.meaning,
        scheme_version=coded.scheme_version,
    )


def ucum(unit: str, meaning: str | None = None) -> CodedConcept:
    """A UCUM unit: the code value is the case-sensitive UCUM expression (e.g. ``mm``, ``1``)."""
    return CodedConcept(value=unit, scheme_designator="UCUM", meaning=meaning or unit)


# Measurements (SNOMED CT, CID 7470/7471 "Linear/Area/Volume measurements").
DIAMETER = concept(codes.SCT.Diameter)
LONG_AXIS = concept(codes.SCT.LongAxis)
SHORT_AXIS = concept(codes.SCT.ShortAxis)
VOLUME = concept(codes.SCT.Volume)
AREA = concept(codes.SCT.Area)

# Finding types and categories (CID 7150 "Segmentation Property Categories", CID 6102/3487).
NODULE = concept(codes.SCT.Nodule)
LESION = concept(codes.SCT.Lesion)
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = concept(codes.SCT.MorphologicallyAbnormalStructure)
LUNG = concept(codes.SCT.Lung)
LEFT = concept(codes.SCT.Left)
RIGHT = concept(codes.SCT.Right)

# Procedure reported (CID 100): the generic imaging procedure when the caller names none.
# IMAGING_PROCEDURE (SCT 363679005) is imported above: the model's default.

# The finding's probability: NUM PROBABILITY (DCM 122157, imported above), in percent.
PERCENT = ucum("%", "percent")
UNITY = ucum("1", "no units")

# The study-level "no finding" result: a TID 1501 group whose Finding (DCM 121071) is
# No abnormality (DCM 111286), with the algorithm identification.
FINDING = concept(codes.DCM.Finding)
PRESENCE = concept(codes.DCM.PresenceOfProperty)
PRESENT = concept(codes.DCM.Present)
ABSENT = concept(codes.DCM.Absent)

# Units.
MILLIMETER = concept(codes.UCUM.Millimeter)
SQUARE_MILLIMETER = concept(codes.UCUM.SquareMillimeter)
CUBIC_MILLIMETER = concept(codes.UCUM.CubicMillimeter)
