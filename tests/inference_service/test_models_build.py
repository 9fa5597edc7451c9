"""``fedgate models build``: reproducible bundled models that load and compute."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from inference_service.manifest import load_manifest
from inference_service.models.build import build_repository
from tests.support.inference import REPO_ROOT


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_build_is_reproducible_and_complete(tmp_path: Path, models_dir: Path) -> None:
    build_repository(tmp_path / "again")
    assert _digests(tmp_path / "again") == _digests(models_dir)
    assert set(_digests(models_dir)) == {
        "nodule-detector/model.onnx",
        "nodule-detector/model.yaml",
        "nodule-presence/model.onnx",
        "nodule-presence/model.yaml",
    }
    for name in ("nodule-detector", "nodule-presence"):
        onnx.checker.check_model(str(models_dir / name / "model.onnx"), full_check=True)
        assert load_manifest(models_dir / name).name == name


def test_cli_build_writes_a_repository(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "fedgate", "models", "build", "--out", str(tmp_path / "repo")],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nodule-detector" in completed.stdout and "sha256=" in completed.stdout
    assert (tmp_path / "repo/nodule-presence/model.onnx").stat().st_size > 0


def test_detector_marks_dense_voxels_inside_the_lungs_only(models_dir: Path) -> None:
    session = onnxruntime.InferenceSession(str(models_dir / "nodule-detector/model.onnx"))
    # Air outside a soft-tissue body, one lung (-850 HU) in it, and a dense cube in the lung.
    volume = np.full((1, 1, 6, 40, 40), -1000.0, dtype=np.float32)
    volume[..., 5:35, 5:35] = 40.0
    volume[..., 10:30, 10:30] = -850.0
    volume[..., 2:4, 18:22, 18:22] = 30.0
    (probability,) = session.run(None, {"volume": volume})
    mask = probability[0, 0] > 0.5
    assert mask[2:4, 18:22, 18:22].all()
    assert mask.sum() == 2 * 4 * 4  # the body wall (also 40 HU) is outside the lung field
