"""Whether a TID 1500 finding says the thing is there or is not there.

A measurement group is not always a finding: a presence classifier writes its "Nodule" group
with the qualitative evaluation "Presence of property" = "Absent" (DCM 121052 / DCM 121054),
and third-party reports say the same with SNOMED CT's "Absent" or "Not present". Such a group
is the absence of its finding type, and the index records it so (``findings.presence``).

A group is **absent** when one of its qualitative evaluations has

- a name that asks about presence: DCM 121052 "Presence of property", SCT 705057003
  "Presence (property)", DCM 121071 "Finding", or the group's own finding type ("Nodule" =
  "Absent"), and
- a value that denies it: DCM 121054 "Absent" (CID 240's DICOM code), SCT 2667000 "Absent"
  and SCT 272519000 "Absent"/"Not present"/"Absence findings" (CID 240/241, PS3.16), SCT
  410516002 "Known absent" (CID 3770), SCT 373067005 "No" (CID 230, a yes/no presence
  question).

A value such as "Absent" under any other name ("Calcification" = "Absent") describes a
property of a finding that is there, and leaves it present. A report with no finding group
at all (or only sr_writer's "No abnormality" group) is an algorithm that found nothing: the
findings index records one absent row without a finding type for it (see
:func:`tabular.records.finding_records`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Presence = Literal["present", "absent"]

PRESENT: Presence = "present"
ABSENT: Presence = "absent"

#: Names (SCHEME:CODE) of qualitative evaluations that ask whether the finding is there.
PRESENCE_CONCEPTS = frozenset({"DCM:121052", "SCT:705057003", "DCM:121071"})

#: Values (SCHEME:CODE) that say it is not.
ABSENCE_VALUES = frozenset(
    {"DCM:121054", "SCT:2667000", "SCT:272519000", "SCT:410516002", "SCT:373067005"}
)


def presence_of(finding_type: str | None, qualitative: Iterable[tuple[str, str]]) -> Presence:
    """``absent`` when a presence question of the group is answered no, else ``present``."""
    for concept, value in qualitative:
        asks = concept in PRESENCE_CONCEPTS or concept == finding_type
        if asks and value in ABSENCE_VALUES:
            return ABSENT
    return PRESENT
