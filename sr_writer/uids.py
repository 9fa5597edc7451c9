"""Deterministic UIDs for results, so that re-running a job replaces its SR/SEG instead of adding
a second one (DESIGN principle 1).

UIDs are ``2.25.<decimal of 128 bits of SHA-256>`` (PS3.5 9.1 and B.2: the UUID-derived root), at
most 44 characters, so no organisation root has to be registered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_ROOT = "2.25."


def derive_uid(*parts: object) -> str:
    """A valid UID derived from ``parts`` (the same parts always give the same UID)."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return _ROOT + str(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class ResultUIDs:
    """The Series and SOP Instance UIDs of one algorithm's SR and SEG for one source series."""

    sr_series_instance_uid: str
    sr_sop_instance_uid: str
    seg_series_instance_uid: str
    seg_sop_instance_uid: str


def derive_result_uids(
    study_uid: str, series_uid: str, algorithm_uid: str, algorithm_version: str
) -> ResultUIDs:
    """The result UIDs for (study, source series, algorithm, version): stable across re-runs.

    A new algorithm version gives new UIDs (a new report beside the old one); the same version
    gives the same UIDs, so storing the result again replaces it in the archive.
    """
    key = (study_uid, series_uid, algorithm_uid, algorithm_version)
    return ResultUIDs(
        sr_series_instance_uid=derive_uid("fedgate-sr-series", *key),
        sr_sop_instance_uid=derive_uid("fedgate-sr-instance", *key),
        seg_series_instance_uid=derive_uid("fedgate-seg-series", *key),
        seg_sop_instance_uid=derive_uid("fedgate-seg-instance", *key),
    )
