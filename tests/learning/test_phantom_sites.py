"""``fedgate phantom --sites``: synthetic sites through a real gateway and its AI pipeline.

The patients go in as a PACS would send them (STOW-RS); the gateway's nodule detector reads
their CTs; the site's training table then holds the clinical and ECG values exactly and the
nodules as the detector measured them, close to the phantom's truth.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from gateway.index import FindingsIndex, IndexSettings
from gateway.learning.table import site_table
from tests.learning.cohorts import plan
from tests.pipeline.conftest import finished_jobs, pipeline_settings, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.process import run_fedgate

PATIENTS = 4


@pytest.mark.slow
def test_phantom_sites_through_the_pipeline_give_the_truths_table(
    tmp_path: Path, inference: InferenceProcess
) -> None:
    written = run_fedgate(
        "phantom", "--sites", "1", "--patients", str(PATIENTS), "--out", str(tmp_path / "files")
    )
    assert written.returncode == 0, written.stderr
    with (tmp_path / "files" / "site-1" / "truth.csv").open() as handle:
        truth = list(csv.DictReader(handle))
    with_nodules = sum(1 for row in truth if float(row["largest_nodule_mm"]) > 0)

    gateway = GatewayProcess(tmp_path / "gateway", pipeline_settings(inference.url)).start()
    try:
        stored = run_fedgate(
            "phantom", "--sites", "1", "--patients", str(PATIENTS), "--stow", gateway.dicomweb_url
        )
        assert stored.returncode == 0, stored.stderr
        assert f"site 1: {PATIENTS}/{PATIENTS} patients" in stored.stderr
        jobs = wait_until(lambda: finished_jobs(gateway, PATIENTS), 180, "the detector's jobs")
        assert {job["state"] for job in jobs} == {"succeeded"}
        assert sum(job["findings_count"] > 0 for job in jobs) == with_nodules
    finally:
        gateway.stop()

    index = FindingsIndex.open(IndexSettings(), gateway.data_dir)
    try:
        table = site_table(index, plan().plan)
    finally:
        index.close()
    x = np.vstack([table.x_train, table.x_test])
    y = np.concatenate([table.y_train, table.y_test])
    assert len(x) == PATIENTS and table.rows_dropped == 0
    by_lvef = {float(row["lvef"]): row for row in truth}
    for features, label in zip(x, y, strict=True):
        row = by_lvef[features[3]]  # LVEF, QTc, smoking, the label: exactly as written
        assert features[0] == int(row["age"])
        assert features[1] == (row["sex"] == "M")
        assert features[2] == (row["smoking"] == "current_smoker")
        assert features[5] == pytest.approx(float(row["qtc"]))
        assert label == int(row["lung_cancer"])
        # The largest nodule as the detector measured it, close to the truth (0: none).
        largest = float(row["largest_nodule_mm"])
        assert features[4] == pytest.approx(largest, rel=0.15, abs=0.5)
