"""The hub's pooled evaluation: the sites' binned counts added up (issue 16, item 4).

Each site reports labels per fixed score bin, calibration sums per decile of predicted risk and
a confusion matrix at the plan's threshold (:mod:`gateway.learning.evaluation`). Because the
bins are the same everywhere, pooling is addition; the pooled ROC curve and its AUC are those
of the pooled binned scores (rows in one bin count as tied scores: half a concordant pair).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.learning.evaluation import SUPPRESSED

__all__ = ["pooled_evaluation", "roc_from_bins"]

CELLS = ("tp", "fp", "tn", "fn")


def roc_from_bins(
    positives: Sequence[float], negatives: Sequence[float]
) -> tuple[list[float], list[float], float | None]:
    """False and true positive rates at each bin edge, from the highest score down, and the
    area under that curve (None where either class is empty)."""
    pos = np.asarray(positives, dtype=np.float64)[::-1]
    neg = np.asarray(negatives, dtype=np.float64)[::-1]
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return [], [], None
    tpr = np.concatenate([[0.0], np.cumsum(pos) / total_pos])
    fpr = np.concatenate([[0.0], np.cumsum(neg) / total_neg])
    # Trapezoids: a negative in a bin beats every positive above it and half of those with it.
    auc = float(np.sum(neg * (np.cumsum(pos) - pos / 2)) / (total_pos * total_neg))
    return fpr.tolist(), tpr.tolist(), auc


def pooled_evaluation(sites: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The pooled figures over ``sites`` (site name -> its evaluation record)."""
    records = list(sites.values())
    if not records:
        return {}
    positives = np.sum([record["score_positives"] for record in records], axis=0)
    negatives = np.sum([record["score_negatives"] for record in records], axis=0)
    fpr, tpr, auc = roc_from_bins(positives.tolist(), negatives.tolist())
    calibration_n = np.sum([record["calibration_n"] for record in records], axis=0)
    predicted = np.sum([record["calibration_predicted"] for record in records], axis=0)
    observed = np.sum([record["calibration_observed"] for record in records], axis=0)
    deciles = [
        {
            "decile": index + 1,
            "n": int(count),
            "mean_predicted": float(predicted[index] / count),
            "observed_rate": float(observed[index] / count),
        }
        for index, count in enumerate(calibration_n)
        if count > 0
    ]
    confusion: dict[str, int | None] = {}
    for cell in CELLS:
        values = [float(record[cell]) for record in records]
        # A cell suppressed at any site is not guessed: the pooled cell is unknown.
        confusion[cell] = None if SUPPRESSED in values else int(sum(values))
    return {
        "n": int(sum(float(record["n"]) for record in records)),
        "positives": int(sum(float(record["positives"]) for record in records)),
        "auc": auc,
        "roc": {"fpr": fpr, "tpr": tpr},
        "calibration": deciles,
        "confusion": confusion,
    }
