"""The vocabulary of a cohort builder: every value a filter may name, from what the site holds.

A dashboard offers modalities, body parts, manufacturers, finding types and sites, algorithms
(name and version), measurement concepts with their units, qualitative concepts with their
values, and clinical variables (the measurements and qualitative values of findings without a
type: clinical-information reports, docs/federated.md "Clinical variables and ECGs"). Which
values exist is itself data (one patient's unusual finding type names that finding), so the
vocabulary is an answer like any other, made by the disclosure control of the role asking:

- ``query``: :meth:`~gateway.federated.noisy.NoisyAnswers.vocabulary`, a value listed only
  when its noisy count of patients clears OpenDP's threshold;
- ``exact``: :func:`~gateway.federated.exact.exact_vocabulary`, a value listed only when at
  least ``min_cell_size`` distinct patients hold it.

Here: the fact rows (patient, list, value) and the released entries' shape. No date is listed
(the builder offers a free range of years), nor anything that is not a category of the index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.federated.cohort import Cohort
from gateway.federated.query import VOCABULARY_SOURCES, vocabulary_sql
from gateway.index import FindingsIndex

#: The lists of an answer, in order, each named as the cohort language names what it filters.
VOCABULARY_LISTS: tuple[str, ...] = tuple(VOCABULARY_SOURCES)

#: The members naming a value in each list's entries (its count and interval follow).
ENTRY_FIELDS: dict[str, tuple[str, ...]] = {
    "modality": ("value",),
    "body_part": ("value",),
    "manufacturer": ("value",),
    "finding_type": ("value",),
    "finding_site": ("value",),
    "algorithm": ("name", "version"),
    "measurement": ("concept", "unit"),
    "qualitative": ("concept", "value"),
    "clinical_measurement": ("concept", "unit"),
    "clinical_qualitative": ("concept", "value"),
}


@dataclass(frozen=True)
class VocabularyFacts:
    """One row per (patient, list, value) of a cohort, each distinct: who holds which value.

    ``keys`` name each row's (list, value) as one string, the key a release counts under
    (JSON, so that no value can run into another)."""

    patients: np.ndarray  # int64
    lists: np.ndarray  # int64: position in VOCABULARY_LISTS
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """Distinct patients per key, over ``rows`` (indices; all rows if None): each row is
        one patient holding one value, so a key's rows are its patients."""
        chosen = self.keys if rows is None else [self.keys[row] for row in rows.tolist()]
        found: dict[str, int] = {}
        for key in chosen:
            found[key] = found.get(key, 0) + 1
        return found


def vocabulary_facts(index: FindingsIndex, cohort: Cohort) -> VocabularyFacts:
    patients: list[int] = []
    lists: list[int] = []
    keys: list[str] = []
    for position, name in enumerate(VOCABULARY_LISTS):
        sql = vocabulary_sql(cohort, name)
        for patient, *value in index.analytic_query(sql.text, sql.params):
            patients.append(int(patient))
            lists.append(position)
            keys.append(json.dumps([name, *(str(v) for v in value)]))
    return VocabularyFacts(
        np.array(patients, dtype=np.int64), np.array(lists, dtype=np.int64), keys
    )


def vocabulary_lists(released: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The answer's ``vocabulary``: per list, the released values (by key) as entries
    ``{value | name, version | concept, unit | concept, value, count...}``, sorted by value;
    every list is present, empty when nothing in it was released."""
    lists: dict[str, list[dict[str, Any]]] = {name: [] for name in VOCABULARY_LISTS}
    for key in sorted(released):
        name, *value = json.loads(key)
        lists[name].append({**dict(zip(ENTRY_FIELDS[name], value, strict=True)), **released[key]})
    return lists
