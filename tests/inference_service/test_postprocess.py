"""Mask outputs in other forms (two-channel softmax logits, sigmoid logits) measure the same."""

from __future__ import annotations

import numpy as np
import pytest

from fedgate.phantom import PhantomSpec, generate_phantom
from inference_service.analyses import postprocess
from inference_service.errors import PermanentError
from inference_service.postprocess import MaskResult
from inference_service.preprocess import prepare_input
from inference_service.repository import Model, ModelRepository
from inference_service.volume import assemble_volume


def _with_output(model: Model, **changes: object) -> Model:
    (mask,) = model.manifest.outputs
    manifest = model.manifest.model_copy(update={"outputs": (mask.model_copy(update=changes),)})
    return Model(manifest, model.backend, model.folder)


def test_softmax_and_sigmoid_logits_give_the_same_lesions(repository: ModelRepository) -> None:
    model = repository.get("nodule-detector")
    phantom = generate_phantom(
        PhantomSpec(seed=81, rows=128, columns=128, slices=40, lesion_diameters_mm=(8.0, 14.0))
    )
    volume = assemble_volume(list(phantom.instances()), model.manifest.input, model.name)
    prepared = prepare_input(volume, model.manifest.input)
    outputs = model.backend.infer({"volume": prepared.tensor})
    probability = np.clip(outputs["lesion_probability"].astype(np.float64), 1e-7, 1 - 1e-7)
    logit = np.log(probability / (1 - probability))

    (plain,) = postprocess(model, outputs, prepared, volume)
    two_channels = np.concatenate([-logit / 2, logit / 2], axis=1).astype(np.float32)
    (softmax,) = postprocess(
        _with_output(model, activation="softmax", channel=1),
        {"lesion_probability": two_channels},
        prepared,
        volume,
    )
    (sigmoid,) = postprocess(
        _with_output(model, activation="sigmoid"),
        {"lesion_probability": logit.astype(np.float32)},
        prepared,
        volume,
    )
    assert isinstance(plain, MaskResult) and len(plain.lesions) == 2
    for other in (softmax, sigmoid):
        assert isinstance(other, MaskResult)
        np.testing.assert_array_equal(other.labels, plain.labels)
        assert [lesion.volume_mm3 for lesion in other.lesions] == pytest.approx(
            [lesion.volume_mm3 for lesion in plain.lesions]
        )

    with pytest.raises(PermanentError, match="channel 2 asked, the output has 2"):
        postprocess(
            _with_output(model, activation="softmax", channel=2),
            {"lesion_probability": two_channels},
            prepared,
            volume,
        )
    with pytest.raises(PermanentError, match="has 2 channels: its manifest must name"):
        postprocess(model, {"lesion_probability": two_channels}, prepared, volume)
    with pytest.raises(PermanentError, match="a mask must match its input"):
        postprocess(model, {"lesion_probability": logit[:, :, :20]}, prepared, volume)


def test_mask_of_a_resampled_model_is_measured_on_the_source_grid(
    repository: ModelRepository,
) -> None:
    model = repository.get("nodule-detector")
    resampling = model.manifest.input.model_copy(update={"spacing_mm": (1.0, 0.8, 0.8)})
    model = Model(
        model.manifest.model_copy(update={"input": resampling}), model.backend, model.folder
    )
    phantom = generate_phantom(
        PhantomSpec(seed=82, rows=128, columns=128, slices=40, lesion_diameters_mm=(10.0, 16.0))
    )
    volume = assemble_volume(list(phantom.instances()), model.manifest.input, model.name)
    prepared = prepare_input(volume, model.manifest.input)
    assert prepared.resampled and prepared.grid_shape == (60, 160, 160)
    outputs = model.backend.infer({"volume": prepared.tensor})
    (result,) = postprocess(model, outputs, prepared, volume)
    assert isinstance(result, MaskResult)
    assert result.labels.shape == volume.values.shape
    found = sorted(lesion.diameter_mm for lesion in result.lesions)
    truth = sorted(lesion.diameter_mm for lesion in phantom.truth.lesions)
    assert found == pytest.approx(truth, rel=0.10)
