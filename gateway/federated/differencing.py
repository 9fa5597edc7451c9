"""The differencing guard: no two answered cohorts may differ by fewer than ``k`` patients.

An attacker who gets count(A) and count(B), where B is A without one patient, has learnt about
that patient, whether the two questions came from one client, from two colluding clients, or
from before and after new data arrived. So each answered cohort's membership (its patients and,
for studies and series, its units with their patients) is kept in ``query_history``, and a
new cohort is refused when, against any cohort answered within the window (any client):

- its patients differ, but by fewer than ``k`` patients; or
- its patients are the same but the question is a different one (a reworded cohort selecting
  exactly the same patients must not be answerable when a one-patient difference would not be,
  or the refusal itself would tell 0 from 1); or
- it counts the same level and its units differ in fewer than ``k`` patients.

Asking the very same cohort again (same definition, same membership) is allowed: its answer is
the same one (and, under differential privacy, the same draw).

Only cohorts whose size is within ``k`` of the new one can be that close, so only those rows
are read (an index on ``patient_count``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gateway.federated.settings import DifferencingGuardSettings
from gateway.federated.sorted_sets import distinct_pairs, runs, unique_sorted
from gateway.index.database import Database


class DifferencingRefused(Exception):
    """The cohort is too close to one answered before."""


@dataclass(frozen=True)
class Membership:
    """Who is behind an answer: sorted unique patients, and units with each unit's patient."""

    level: str
    patients: np.ndarray  # int64, sorted, unique
    units: np.ndarray  # int64, sorted, unique (empty at patient level: units are patients)
    unit_patients: np.ndarray  # int64, the patient of each unit

    @classmethod
    def from_pairs(cls, level: str, pairs: np.ndarray | list[tuple[int, int]]) -> Membership:
        array = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return cls.from_columns(level, array[:, 0], array[:, 1])

    @classmethod
    def from_columns(cls, level: str, units: np.ndarray, patients: np.ndarray) -> Membership:
        """From (unit, patient) rows given as two columns, duplicates allowed."""
        if level == "patients":
            empty = np.empty(0, dtype=np.int64)
            return cls(level, unique_sorted(patients), empty, empty)
        pair_units, pair_patients = distinct_pairs(units, patients)
        # A unit belongs to one patient; should the index ever say otherwise, the first wins.
        first = runs(pair_units)[1]
        return cls(level, unique_sorted(patients), pair_units[first], pair_patients[first])

    @property
    def unit_count(self) -> int:
        return len(self.patients) if self.level == "patients" else len(self.units)


def _patients_in_unit_difference(a: Membership, b: Membership) -> int:
    only_a = ~np.isin(a.units, b.units, assume_unique=True)
    only_b = ~np.isin(b.units, a.units, assume_unique=True)
    patients = np.concatenate([a.unit_patients[only_a], b.unit_patients[only_b]])
    return len(unique_sorted(patients))


class DifferencingGuard:
    def __init__(self, database: Database, settings: DifferencingGuardSettings, k: int):
        self.database = database
        self.settings = settings
        self.k = k

    def check(self, membership: Membership, definition: str) -> bool:
        """Raise DifferencingRefused if the cohort is too close to a recent answered one;
        True when this very cohort (same definition and membership) was answered before."""
        if not self.settings.enabled:
            return False
        seen_before = False
        size = len(membership.patients)
        since = time.time() - self.settings.window_days * 86400
        rows = self.database.query(
            "SELECT level, definition, patients, units, unit_patients FROM query_history "
            "WHERE patient_count > ? AND patient_count < ? AND asked_at >= ? "
            "ORDER BY query_id DESC LIMIT ?",
            (size - self.k, size + self.k, since, self.settings.max_compared),
        )
        for level, earlier_definition, patients, units, unit_patients in rows:
            earlier = Membership(
                level,
                np.frombuffer(bytes(patients), dtype=np.int64),
                np.frombuffer(bytes(units), dtype=np.int64),
                np.frombuffer(bytes(unit_patients), dtype=np.int64),
            )
            difference = len(np.setxor1d(membership.patients, earlier.patients, assume_unique=True))
            if 0 < difference < self.k:
                raise DifferencingRefused(
                    f"this cohort differs from one answered before by fewer than {self.k} "
                    "patients; answering both would disclose the difference"
                )
            if difference == 0 and earlier_definition != definition:
                raise DifferencingRefused(
                    "this cohort selects the same patients as a differently defined cohort "
                    f"answered before; cohorts closer than {self.k} patients are not answered"
                )
            if level == membership.level and level != "patients":
                unit_difference = _patients_in_unit_difference(membership, earlier)
                if 0 < unit_difference < self.k:
                    raise DifferencingRefused(
                        f"this cohort's {level} differ from those of one answered before in "
                        f"fewer than {self.k} patients"
                    )
            if (
                difference == 0
                and earlier_definition == definition
                and (level != membership.level or np.array_equal(membership.units, earlier.units))
            ):
                seen_before = seen_before or level == membership.level
        return seen_before

    def record(self, membership: Membership, definition: str, client: str) -> None:
        """Remember an answered cohort (and forget those older than the window)."""
        since = time.time() - self.settings.window_days * 86400
        self.database.execute("DELETE FROM query_history WHERE asked_at < ?", (since,))
        self.database.execute(
            "INSERT INTO query_history (asked_at, client, level, definition, patient_count, "
            "patients, units, unit_patients) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                time.time(),
                client,
                membership.level,
                definition,
                len(membership.patients),
                membership.patients.tobytes(),
                membership.units.tobytes(),
                membership.unit_patients.tobytes(),
            ),
        )
