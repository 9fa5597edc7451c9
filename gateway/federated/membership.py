"""Who is behind an answer: a cohort's patients and, for studies and series, its units.

The membership decides what is counted (units, distinct patients) and how much one patient
weighs in a noisy answer (the number of units each patient has). It is never part of what is
released, nor of a cache key: whether two questions select the same patients is itself a fact
about the data (docs/privacy.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.federated.sorted_sets import Ranks, dense_ranks, distinct_pairs, runs, unique_sorted


@dataclass(frozen=True)
class Membership:
    """Sorted unique patients, and units with each unit's patient."""

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
        return cls.from_ranks(level, dense_ranks(units), dense_ranks(patients))

    @classmethod
    def from_ranks(cls, level: str, units: Ranks, patients: Ranks) -> Membership:
        """From the dense ranks of (unit, patient) rows (:attr:`Facts.unit_ranks`)."""
        if level == "patients":
            empty = np.empty(0, dtype=np.int64)
            return cls(level, patients.values, empty, empty)
        pair_units, pair_patients = distinct_pairs(units.ranks, patients.ranks)
        # A unit belongs to one patient; should the index ever say otherwise, the first wins.
        first = runs(pair_units)[1]
        return cls(
            level,
            patients.values,
            units.values[pair_units[first]],
            patients.values[pair_patients[first]],
        )

    @property
    def unit_count(self) -> int:
        return len(self.patients) if self.level == "patients" else len(self.units)

    def units_per_patient(self) -> np.ndarray:
        """How many units each patient has (ones at patient level)."""
        if self.level == "patients":
            return np.ones(len(self.patients), dtype=np.int64)
        _, starts, ends = runs(np.sort(self.unit_patients))
        return ends - starts
