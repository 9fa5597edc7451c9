"""The analysis benchmark (bench/analysis.py) at smoke size: it runs, and measures what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis import run

pytestmark = pytest.mark.orthanc


def test_the_backfill_benchmark_runs_at_smoke_size(tmp_path: Path) -> None:
    result = run(count=60, clinical=1, slices=8, size=32, work=tmp_path, quiet=True)
    assert result["selected"] == result["succeeded"] == 60  # every study of Orthanc, once
    assert len(result["clinical_idle_s"]) == len(result["clinical_during_s"]) == 1
    assert len(result["clinical_paused_s"]) == 1
    assert result["clinical_pair_ratio_median"] > 0
    assert 0 < result["clinical_idle_median_s"] < 60
    assert 0 < result["clinical_during_median_s"] < 60
    assert 0 <= result["own_ms_median"] <= result["own_ms_p95"]
    assert result["selection_ms_per_study"] > 0 and result["backfill_studies_per_min"] > 0
