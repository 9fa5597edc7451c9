"""Manifests and the repository: errors name the model and the field; broken repositories refuse
to start unless told to skip bad models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inference_service.manifest import ManifestError, load_manifest, parse_manifest
from inference_service.repository import ModelRepository, RepositoryError
from inference_service.settings import ConfigError, InferenceSettings, load_settings
from tests.support.inference import REPO_ROOT


def _manifest(models_dir: Path, name: str = "nodule-detector") -> dict:
    return yaml.safe_load((models_dir / name / "model.yaml").read_text())


def _copy_repository(models_dir: Path, target: Path) -> Path:
    shutil.copytree(models_dir, target)
    return target


def test_manifest_error_names_model_and_field(models_dir: Path) -> None:
    data = _manifest(models_dir)
    data["input"]["modality"] = 7
    data["outputs"][0]["threshold"] = "half"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, "nodule-detector")
    message = str(caught.value)
    assert message.startswith("nodule-detector: ")
    assert "input.modality" in message
    assert "outputs.0.mask.threshold" in message


def test_manifest_refuses_unknown_keys_and_wrong_folder(models_dir: Path) -> None:
    data = _manifest(models_dir)
    data["input"]["spacing"] = [1, 1, 1]  # a typo of spacing_mm
    with pytest.raises(ManifestError, match=r"input\.spacing: Extra inputs are not permitted"):
        parse_manifest(data, "nodule-detector")
    with pytest.raises(ManifestError, match="differs from its folder"):
        parse_manifest(_manifest(models_dir), "other-folder")


def test_manifest_checks_class_labels_and_window(models_dir: Path) -> None:
    data = _manifest(models_dir, "nodule-presence")
    data["outputs"][0]["finding_class"] = "maybe"
    with pytest.raises(ManifestError, match="finding_class 'maybe' is not one of"):
        parse_manifest(data, "nodule-presence")
    data = _manifest(models_dir)
    data["input"]["intensity"]["window"] = [400, -1000]
    with pytest.raises(ManifestError, match="low < high"):
        parse_manifest(data, "nodule-detector")


def test_repository_refuses_broken_model_unless_skipping(tmp_path: Path, models_dir: Path) -> None:
    root = _copy_repository(models_dir, tmp_path / "repo")
    data = _manifest(root)
    data["outputs"][0]["name"] = "no_such_tensor"
    (root / "nodule-detector/model.yaml").write_text(yaml.safe_dump(data))
    (root / "broken").mkdir()
    (root / "broken/model.yaml").write_text("name: [unclosed\n")
    with pytest.raises(RepositoryError) as caught:
        ModelRepository.load(InferenceSettings(models_dir=root))
    message = str(caught.value)
    assert "nodule-detector: outputs.0.name: 'no_such_tensor' is not an output" in message
    assert "broken: model.yaml is not valid YAML" in message

    repository = ModelRepository.load(InferenceSettings(models_dir=root, skip_bad_models=True))
    assert list(repository.models) == ["nodule-presence"]
    assert set(repository.skipped) == {"nodule-detector", "broken"}


def test_missing_onnx_file_is_named(tmp_path: Path, models_dir: Path) -> None:
    root = _copy_repository(models_dir, tmp_path / "repo")
    (root / "nodule-presence/model.onnx").unlink()
    with pytest.raises(RepositoryError, match=r"nodule-presence: model\.onnx is missing"):
        ModelRepository.load(InferenceSettings(models_dir=root))
    (root / "nodule-presence/model.onnx").write_bytes(b"not onnx")
    with pytest.raises(RepositoryError, match=r"nodule-presence: .*onnxruntime cannot load it"):
        ModelRepository.load(InferenceSettings(models_dir=root))


def test_cli_refuses_to_start_on_a_broken_repository(tmp_path: Path, models_dir: Path) -> None:
    root = _copy_repository(models_dir, tmp_path / "repo")
    data = _manifest(root)
    del data["algorithm_uid"]
    (root / "nodule-detector/model.yaml").write_text(yaml.safe_dump(data))
    completed = subprocess.run(
        [sys.executable, "-m", "fedgate", "inference", "--models", str(root)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "nodule-detector: algorithm_uid: Field required" in completed.stderr


def test_settings_errors_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "inference.yaml"
    config.write_text("concurrency: {max_analyses: 0}\nlisten: {prot: 1}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "concurrency.max_analyses" in str(caught.value)
    assert "listen.prot" in str(caught.value)


def test_model_override_must_name_a_model(tmp_path: Path, models_dir: Path) -> None:
    settings = InferenceSettings(
        models_dir=models_dir,
        models={"no-such-model": {"backend": {"type": "oip", "url": "http://127.0.0.1:9"}}},
    )
    with pytest.raises(RepositoryError, match="no-such-model"):
        ModelRepository.load(settings)


def test_bundled_manifests_round_trip(models_dir: Path) -> None:
    manifest = load_manifest(models_dir / "nodule-presence")
    assert manifest.input.spacing_mm == (2.0, 2.0, 2.0)
    assert manifest.algorithm_uid.startswith("2.25.")
    assert os.path.getsize(models_dir / "nodule-presence/model.yaml") > 0


def test_the_readme_manifest_example_is_valid() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("```yaml\nname: lung-nodule-unet")
    block = readme[start + len("```yaml\n") : readme.index("```", start + 7)]
    manifest = parse_manifest(yaml.safe_load(block), "lung-nodule-unet")
    assert [output.kind for output in manifest.outputs] == ["mask", "class_probabilities"]
    assert manifest.input.spacing_mm == (1.5, 1.0, 1.0)
    mask = manifest.mask_output
    assert mask is not None and mask.activation == "softmax" and mask.channel == 1


def test_environment_overrides_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "inference.yaml"
    config.write_text("listen: {port: 9000}\nconcurrency: {max_analyses: 3}\n")
    monkeypatch.setenv("FEDGATE_INFERENCE_LISTEN__PORT", "9100")
    settings = load_settings(config)
    assert settings.listen.port == 9100
    assert settings.concurrency.max_analyses == 3
