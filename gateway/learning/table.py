"""A site's training table: the plan's features and label, one row per patient (or study).

Built at the site from its own findings index and never sent anywhere: the ClientApp trains on
it and returns model parameters and aggregate metrics only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SiteTable"]


@dataclass(frozen=True)
class SiteTable:
    """Features (float64, one column per plan feature, in the plan's order) and the binary
    label (0/1), split into the training rows and the held-out rows of the plan's evaluation.
    Missing values have been handled as the plan says (rows dropped, or the site's mean)."""

    feature_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    #: Rows of the cohort left out: no label, or (``missing: drop``) a feature missing.
    rows_dropped: int

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])
