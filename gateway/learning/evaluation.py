"""A site's evaluation of a model on its held-out rows: aggregates only (issue 16, item 4).

What a site returns (a flat record of numbers and lists of numbers, Flower's MetricRecord):

- ``n``, ``positives``: held-out rows and positive labels among them;
- ``auc``: the site's own ROC AUC (omitted where the held-out rows hold one class only);
- ``score_positives[b]``, ``score_negatives[b]``: labels per score bin (``score_bins`` equal
  bins over [0, 1]), from which the hub pools a ROC curve over all sites. Adjacent bins are
  merged until each reported bin holds at least ``min_cell`` rows (a merged group's counts stand
  in its first bin), so no bin describes fewer than ``min_cell`` patients;
- ``calibration_n[d]``, ``calibration_predicted[d]`` (sum of predicted probabilities),
  ``calibration_observed[d]`` (positives) in the ten deciles of predicted risk
  ([0, 0.1), ..., [0.9, 1]), merged the same way;
- ``tp``, ``fp``, ``tn``, ``fn`` at the plan's threshold, a cell under ``min_cell`` reported as
  -1 (suppressed: "fewer than min_cell", never its value).

Fixed bins over [0, 1] make the sites' figures add up: the hub sums them bin by bin.
"""

from __future__ import annotations

import numpy as np

from gateway.learning.plan import Evaluation

__all__ = ["SUPPRESSED", "rank_auc", "site_evaluation"]

SUPPRESSED = -1
DECILES = 10


def site_evaluation(
    y: np.ndarray, scores: np.ndarray, evaluation: Evaluation
) -> dict[str, float | list[float]]:
    """The aggregates above for held-out labels ``y`` (0/1) and predicted ``scores``."""
    y = np.asarray(y, dtype=np.int64)
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    record: dict[str, float | list[float]] = {
        "n": float(len(y)),
        "positives": float(y.sum()),
    }
    if 0 < y.sum() < len(y):
        record["auc"] = rank_auc(y, scores)

    bins = _bin_of(scores, evaluation.score_bins)
    positives = np.bincount(bins, weights=y, minlength=evaluation.score_bins)
    negatives = np.bincount(bins, weights=1 - y, minlength=evaluation.score_bins)
    positives, negatives = _merge_small(
        evaluation.min_cell, positives + negatives, positives, negatives
    )
    record["score_positives"] = positives.tolist()
    record["score_negatives"] = negatives.tolist()

    deciles = _bin_of(scores, DECILES)
    counts = np.bincount(deciles, minlength=DECILES).astype(np.float64)
    predicted = np.bincount(deciles, weights=scores, minlength=DECILES)
    observed = np.bincount(deciles, weights=y, minlength=DECILES)
    counts, predicted, observed = _merge_small(
        evaluation.min_cell, counts, counts, predicted, observed
    )
    record["calibration_n"] = counts.tolist()
    record["calibration_predicted"] = predicted.tolist()
    record["calibration_observed"] = observed.tolist()

    predicted_positive = scores >= evaluation.threshold
    cells = {
        "tp": int(np.sum(predicted_positive & (y == 1))),
        "fp": int(np.sum(predicted_positive & (y == 0))),
        "tn": int(np.sum(~predicted_positive & (y == 0))),
        "fn": int(np.sum(~predicted_positive & (y == 1))),
    }
    for name, count in cells.items():
        record[name] = float(count if count >= evaluation.min_cell else SUPPRESSED)
    return record


def rank_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half), in NumPy alone: the ClientApp
    does not import scikit-learn for it (Flower starts one process per message)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1, dtype=np.float64)
    # Tied scores share the mean of their ranks.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            ranks[order[start : start + count]] = start + (count + 1) / 2
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _bin_of(scores: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each score in [0, 1]; a score of exactly 1 is in the last bin."""
    index: np.ndarray = np.minimum((scores * bins).astype(np.int64), bins - 1)
    return index


def _merge_small(min_cell: int, size: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``arrays`` with adjacent bins merged, from the low end, until each group holds
    ``min_cell`` rows or more (``size``: rows per bin); a group's sums stand in its first bin,
    the others read 0. A short last group joins the group before it."""
    merged = [np.zeros(len(size)) for _ in arrays]
    groups: list[list[int]] = []
    current: list[int] = []
    for index in range(len(size)):
        current.append(index)
        if size[current].sum() >= min_cell:
            groups.append(current)
            current = []
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    for group in groups:
        for source, target in zip(arrays, merged, strict=True):
            target[group[0]] = source[group].sum()
    return tuple(merged)
