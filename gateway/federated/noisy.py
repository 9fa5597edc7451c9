"""Noisy answers, for the ``query`` role: every released number is differentially private.

One patient's contribution is bounded before noise is added, and the noise is calibrated to
that bound (the sensitivity), never to the data:

- a patient-level count: one per patient;
- a study- or series-level count: at most ``max_rows_per_patient`` units per patient;
- a patient-level table over study properties (sex, age, study year): each patient is placed
  by their latest study in the cohort, in exactly one cell;
- any other table: at most ``max_rows_per_patient`` (unit, cell) rows per patient;
- a summary: at patient level each patient's values are averaged to one value; at other
  levels at most ``max_rows_per_patient`` values per patient, each clamped to the bounds.

Tables whose values are all known in advance (bins, sexes, the modality vocabulary) release
every cell, zeros included. A table over an open category releases only the cells whose
noisy count clears a threshold (:meth:`NoiseMechanism.release_open`): which values exist is
data too. Nothing is suppressed and nothing depends on the true counts except the noisy
numbers; answers are then post-processed (rounded, non-negative, totals from cells), which
costs nothing more.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from gateway.federated.cohort import AggregateRequest, SummarySpec
from gateway.federated.disclosure import OTHER, CellKey
from gateway.federated.exact import summary_header, summary_values
from gateway.federated.facts import Facts, cell_codes
from gateway.federated.membership import Membership
from gateway.federated.privacy import NoiseMechanism, Sensitivity
from gateway.federated.settings import DifferentialPrivacySettings
from gateway.federated.sorted_sets import (
    dense_ranks,
    distinct_triples,
    first_of_each_run,
    order_by,
    runs,
)
from gateway.federated.tables import (
    STUDY_PROPERTIES,
    cell_entry,
    cohort_membership,
    dimension_name,
    dimensions_of,
    first_per_group,
    fixed_values,
    grid,
    table_facts,
)
from gateway.federated.vocabulary import VocabularyFacts, vocabulary_lists
from gateway.index import FindingsIndex

#: Modalities listed in every noisy table by modality, zeros included (DICOM PS3.3
#: C.7.3.1.1.1 defined terms in use, plus ECG and the results' SR and SEG): a fixed list, so
#: that listing them says nothing. Any other modality is counted in "(other)".
MODALITY_VOCABULARY: tuple[str, ...] = (
    "CT",
    "MR",
    "PT",
    "NM",
    "US",
    "CR",
    "DX",
    "MG",
    "XA",
    "RF",
    "OT",
    "ECG",
    "SR",
    "SEG",
    OTHER,
)
VOCABULARY: dict[str, tuple[str, ...]] = {"modality": MODALITY_VOCABULARY}

QUANTILE_BINS = 64


def _interval(value: float, half_width: float) -> list[int]:
    return [max(0, math.floor(value - half_width)), max(0, math.ceil(value + half_width))]


def _count_entry(value: float, half_width: float) -> dict[str, Any]:
    return {"count": max(0, round(value)), "interval": _interval(value, half_width)}


class NoisyAnswers:
    """The noisy count, table and summary of a request, for an epsilon."""

    def __init__(self, index: FindingsIndex, settings: DifferentialPrivacySettings):
        self.index = index
        self.settings = settings
        self.noise = NoiseMechanism(settings)
        self.bound = settings.max_rows_per_patient

    def count(
        self, request: AggregateRequest, membership: Membership, epsilon: float
    ) -> dict[str, Any]:
        if request.level == "patients":
            value, sensitivity = float(len(membership.patients)), Sensitivity(1, 1.0, 1.0)
        else:
            per_patient = np.minimum(membership.units_per_patient(), self.bound)
            bound = float(self.bound)
            value, sensitivity = float(per_patient.sum()), Sensitivity(1, bound, bound)
        noisy = self.noise.release([value], sensitivity, epsilon)
        return _count_entry(noisy.values[0], noisy.half_width)

    def table(
        self,
        request: AggregateRequest,
        membership: Callable[[], Membership],
        epsilon: float,
    ) -> dict[str, Any]:
        """A noisy table; ``membership`` is asked for only when the table's total needs a
        count of its own (a table that holds each patient once sums its cells instead) and
        the fact rows do not give it (:func:`~gateway.federated.tables.cohort_membership`)."""
        dimensions = dimensions_of(request)
        facts = table_facts(self.index, request)
        fixed = [fixed_values(d, VOCABULARY) for d in dimensions]
        # Values outside a vocabulary are counted in its "(other)".
        merged: list[set[Hashable]] = []
        for axis, axis_fixed in enumerate(fixed):
            outside = set()
            if axis_fixed is not None and OTHER in axis_fixed and len(facts):
                outside = {v for v in facts.encoded(axis)[0] if v not in axis_fixed}
            merged.append(outside)
        one_cell = request.level == "patients" and all(
            dimension_name(d) in STUDY_PROPERTIES for d in dimensions
        )
        counts, sensitivity = self._cell_counts(request, facts, merged, fixed, one_cell)
        answer: dict[str, Any] = {"dimensions": [d.model_dump(mode="json") for d in dimensions]}
        open_table = any(axis_fixed is None for axis_fixed in fixed)
        # A table whose cells hold each patient once gives its total as their sum (free);
        # any other spends a quarter of the epsilon on a count of its own.
        cell_epsilon = epsilon if one_cell and not open_table else epsilon * 0.75
        if not (one_cell and not open_table):
            cohort = cohort_membership(request, facts, membership)
            answer["total"] = self.count(request, cohort, epsilon - cell_epsilon)
        if open_table:
            keyed = {json.dumps(list(key), default=str): n for key, n in counts.items()}
            released, threshold, half_width = self.noise.release_open(
                keyed, sensitivity, cell_epsilon
            )
            lookup = {json.dumps(list(key), default=str): key for key in counts}
            keys = sorted((lookup[text] for text in released), key=str)
            answer["threshold"] = math.ceil(threshold)
            values = [released[json.dumps(list(key), default=str)] for key in keys]
        else:
            assert all(axis_fixed is not None for axis_fixed in fixed)
            keys = grid([list(axis_fixed) for axis_fixed in fixed if axis_fixed is not None])
            noisy = self.noise.release(
                [counts.get(k, 0.0) for k in keys], sensitivity, cell_epsilon
            )
            values, half_width = noisy.values, noisy.half_width
        answer["cells"] = [
            {**cell_entry(dimensions, key), **_count_entry(value, half_width)}
            for key, value in zip(keys, values, strict=True)
        ]
        if "total" not in answer:
            total = float(sum(max(0.0, v) for v in values))
            # Sum of independent noises: a normal approximation of the sum's 95 % interval.
            spread = half_width * math.sqrt(len(values) / 2)
            answer["total"] = _count_entry(total, spread)
        return answer

    def _cell_counts(
        self,
        request: AggregateRequest,
        facts: Facts,
        merged: list[set[Hashable]],
        fixed: list[tuple[Hashable, ...] | None],
        one_cell: bool,
    ) -> tuple[dict[CellKey, float], Sensitivity]:
        """The count per cell of a patient-bounded selection of the facts, and the bound."""
        dimensions = dimensions_of(request)
        bound = float(self.bound)
        if not len(facts):
            sensitivity = (
                Sensitivity(1, 1.0, 1.0) if one_cell else Sensitivity(self.bound, 1.0, bound)
            )
            return {}, sensitivity
        codes = cell_codes(dimensions, facts, merged, fixed)
        valid = np.flatnonzero(codes.valid)
        cell_of_row = codes.codes[valid]
        patients = facts.patient_ranks.ranks[valid]  # ranks: the same order and groups
        units = facts.unit_ranks.ranks[valid]
        if one_cell:
            # The patient's latest study: the largest value of the first dimension that is
            # an age or a year (rows without one last), then by cell.
            order = dense_ranks(self._recency(dimensions, facts, valid)).ranks
            ranked = order_by(patients, order, cell_of_row)
            last = runs(patients[ranked])[2] - 1
            chosen = ranked[last]
            kept_cells = cell_of_row[chosen]
            sensitivity = Sensitivity(1, 1.0, 1.0)
        else:
            # Distinct (unit, cell) rows, a patient's first `bound` of them.
            pair_patients, _, pair_cells = distinct_triples(patients, units, cell_of_row)
            keep = first_of_each_run(pair_patients, self.bound)  # the pairs come sorted
            kept_cells = pair_cells[keep]
            per_cell = 1.0 if request.level == "patients" else bound
            sensitivity = Sensitivity(self.bound, per_cell, bound)
        values, starts, ends = runs(np.sort(kept_cells))
        return {
            codes.key(code): float(end - start)
            for code, start, end in zip(
                values.tolist(), starts.tolist(), ends.tolist(), strict=True
            )
        }, sensitivity

    @staticmethod
    def _recency(dimensions: list[Any], facts: Facts, rows: np.ndarray) -> np.ndarray:
        for axis, dimension in enumerate(dimensions):
            if dimension_name(dimension) in {"age", "study_year"}:
                column = facts.numbers(axis)[rows]
                return np.where(np.isnan(column), -np.inf, column)
        return np.zeros(len(rows))

    def vocabulary(self, facts: VocabularyFacts, epsilon: float) -> dict[str, Any]:
        """The values of every list whose noisy count of patients clears the threshold.

        All lists are one release (OpenDP's threshold mechanism over keys (list, value)), with
        each patient counted for at most ``max_rows_per_patient`` values in all: the epsilon is
        spent once on a sensitivity of that bound, where ten releases of one list each, a
        patient bounded in every list, would need ten times the noise for the same epsilon
        (a threshold of about 115 patients with the defaults instead of about 1,150)."""
        kept = self._bounded_values(facts)
        counts = {key: float(n) for key, n in facts.counts(kept).items()}
        sensitivity = Sensitivity(self.bound, 1.0, float(self.bound))
        released, threshold, half_width = self.noise.release_open(counts, sensitivity, epsilon)
        return {
            "threshold": math.ceil(threshold),
            "vocabulary": vocabulary_lists(
                {key: _count_entry(value, half_width) for key, value in released.items()}
            ),
        }

    def _bounded_values(self, facts: VocabularyFacts) -> np.ndarray:
        """The rows kept: a patient's first ``max_rows_per_patient`` values, taken round the
        lists (one value of each list they have, in random order, before a second value of
        any), so that a patient with many modalities still counts for their finding."""
        tie = np.random.default_rng().random(len(facts))
        ranked = np.lexsort((tie, facts.lists, facts.patients))
        patients, lists = facts.patients[ranked], facts.lists[ranked]
        starts = np.flatnonzero(
            np.r_[True, (patients[1:] != patients[:-1]) | (lists[1:] != lists[:-1])]
        )
        run_start = np.repeat(starts, np.diff(np.r_[starts, len(ranked)]))
        rank_in_list = np.empty(len(ranked))
        rank_in_list[ranked] = np.arange(len(ranked)) - run_start
        return first_per_group(facts.patients, rank_in_list + tie, self.bound)

    def summary(self, request: AggregateRequest, epsilon: float) -> dict[str, Any]:
        spec = request.aggregate
        assert isinstance(spec, SummarySpec)
        values, patients = summary_values(self.index, request)
        middle, half = (spec.lower + spec.upper) / 2, (spec.upper - spec.lower) / 2
        if request.level == "patients":
            # One value per patient: the mean of theirs.
            order = np.argsort(patients, kind="stable")
            found, starts, ends = runs(patients[order])
            sums = np.add.reduceat(values[order], starts) if len(found) else np.empty(0)
            values = sums / (ends - starts) if len(found) else values[:0]
            rows = 1.0
        else:
            keep = first_per_group(patients, np.arange(len(patients)), self.bound)
            values = values[keep]
            rows = float(self.bound)
        centred = values - middle
        parts: tuple[float, ...] = (0.25, 0.5, 0.25)
        if spec.quantiles:
            parts = (0.2, 0.4, 0.15, 0.25)
        n = self.noise.release([float(len(values))], Sensitivity(1, rows, rows), epsilon * parts[0])
        total = self.noise.release(
            [float(centred.sum())], Sensitivity(1, rows * half, rows * half), epsilon * parts[1]
        )
        squares = self.noise.release(
            [float((centred**2).sum())],
            Sensitivity(1, rows * half**2, rows * half**2),
            epsilon * parts[2],
        )
        count = max(1.0, n.values[0])
        mean_offset = min(half, max(-half, total.values[0] / count))
        variance = max(0.0, squares.values[0] / count - mean_offset**2)
        result = summary_header(spec)
        result.update(
            n=max(0, round(n.values[0])),
            mean=middle + mean_offset,
            sd=math.sqrt(variance),
            mean_interval=[
                max(spec.lower, middle + mean_offset - total.half_width / count),
                min(spec.upper, middle + mean_offset + total.half_width / count),
            ],
        )
        if spec.quantiles:
            edges = np.linspace(spec.lower, spec.upper, QUANTILE_BINS + 1)
            counts, _ = np.histogram(values, bins=edges)
            noisy = self.noise.release(
                counts.astype(float).tolist(),
                Sensitivity(int(rows), rows, rows),
                epsilon * parts[3],
            )
            cleaned = np.maximum(0.0, np.array(noisy.values))
            cumulative = np.cumsum(cleaned) / max(cleaned.sum(), 1e-9)
            result["quantiles"] = {
                str(q): float(edges[min(int(np.searchsorted(cumulative, q)) + 1, QUANTILE_BINS)])
                for q in spec.quantiles
            }
        return result
