"""A site's evaluation aggregates and the hub's pooling of them."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from gateway.learning.evaluation import SUPPRESSED, site_evaluation
from gateway.learning.plan import Evaluation
from hub.learning.pooling import pooled_evaluation


def _site(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scores = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, scores


def test_pooled_auc_from_binned_counts_matches_the_pooled_rows() -> None:
    evaluation = Evaluation(score_bins=1000, min_cell=1)
    sites = {f"site{i}": _site(i, n) for i, n in enumerate((150, 400, 90))}
    records = {name: site_evaluation(y, s, evaluation) for name, (y, s) in sites.items()}
    pooled = pooled_evaluation(records)
    all_y = np.concatenate([y for y, _ in sites.values()])
    all_scores = np.concatenate([s for _, s in sites.values()])
    assert abs(pooled["auc"] - roc_auc_score(all_y, all_scores)) < 1e-3
    for name, (y, s) in sites.items():
        assert abs(records[name]["auc"] - roc_auc_score(y, s)) < 1e-12
    assert pooled["n"] == len(all_y) and pooled["positives"] == int(all_y.sum())
    predicted = all_scores >= 0.5
    assert pooled["confusion"]["tp"] == int(np.sum(predicted & (all_y == 1)))
    assert pooled["roc"]["tpr"][-1] == 1.0 and pooled["roc"]["fpr"][-1] == 1.0


def test_small_cells_are_merged_or_suppressed_never_shown() -> None:
    evaluation = Evaluation(score_bins=100, min_cell=5, threshold=0.9)
    y, scores = _site(7, 60)
    record = site_evaluation(y, scores, evaluation)
    rows_per_bin = np.add(record["score_positives"], record["score_negatives"])
    assert all(count == 0 or count >= 5 for count in rows_per_bin)
    assert rows_per_bin.sum() == 60 and sum(record["score_positives"]) == y.sum()
    assert all(count == 0 or count >= 5 for count in record["calibration_n"])
    assert sum(record["calibration_n"]) == 60
    # Few scores reach 0.9: the positive cells are under 5 and reported as suppressed.
    assert record["tp"] == SUPPRESSED or record["tp"] >= 5
    assert record["fp"] == SUPPRESSED or record["fp"] >= 5
    assert SUPPRESSED in (record["tp"], record["fp"])
    pooled = pooled_evaluation({"a": record, "b": record})
    suppressed = [cell for cell in ("tp", "fp") if record[cell] == SUPPRESSED]
    assert all(pooled["confusion"][cell] is None for cell in suppressed)
