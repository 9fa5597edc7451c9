"""The model repository: one folder per model, ``<name>/model.onnx`` + ``<name>/model.yaml``.

The layout is Triton's (one folder per model), with a manifest instead of ``config.pbtxt``
because the service needs more than tensor shapes: what series a model accepts and what its
outputs mean clinically. A broken model (manifest invalid, ONNX missing or not loadable,
manifest and graph disagreeing on tensor names) stops the service from starting with a
message naming the model and the field, unless ``skip_bad_models`` is set; then it is logged
and left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from inference_service.backends import ModelBackend
from inference_service.backends.local import LocalBackend
from inference_service.backends.remote import RemoteBackend
from inference_service.errors import InferenceServiceError, UnknownModelError
from inference_service.manifest import (
    MODEL_FILE_NAME,
    ManifestError,
    ModelManifest,
    OipBackend,
    load_manifest,
)
from inference_service.settings import InferenceSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Model:
    manifest: ModelManifest
    backend: ModelBackend
    folder: Path

    @property
    def name(self) -> str:
        return self.manifest.name


class RepositoryError(Exception):
    """The repository cannot be served; the message names every broken model and field."""


def _check_tensor_names(model: Model) -> None:
    manifest = model.manifest
    inputs = [spec.name for spec in model.backend.inputs]
    if manifest.input.name not in inputs:
        raise ManifestError(
            manifest.name,
            f"input.name: {manifest.input.name!r} is not an input of the model {inputs}",
        )
    outputs = [spec.name for spec in model.backend.outputs]
    for index, output in enumerate(manifest.outputs):
        if output.name not in outputs:
            raise ManifestError(
                manifest.name,
                f"outputs.{index}.name: {output.name!r} is not an output of the model {outputs}",
            )


def load_model(folder: Path, settings: InferenceSettings) -> Model:
    manifest = load_manifest(folder)
    override = settings.models.get(manifest.name)
    backend_spec = override.backend if override and override.backend else manifest.backend
    backend: ModelBackend
    if isinstance(backend_spec, OipBackend):
        # A remote model's tensors are checked against the remote metadata when first used.
        return Model(manifest, RemoteBackend(backend_spec, manifest.name), folder)
    model_path = folder / MODEL_FILE_NAME
    if not model_path.is_file():
        raise ManifestError(manifest.name, f"{MODEL_FILE_NAME} is missing in {folder}")
    try:
        backend = LocalBackend(model_path, settings.onnxruntime)
    except InferenceServiceError as error:
        raise ManifestError(manifest.name, error.message) from None
    model = Model(manifest, backend, folder)
    _check_tensor_names(model)
    return model


class ModelRepository:
    def __init__(self, models: dict[str, Model], skipped: dict[str, str]) -> None:
        self.models = models
        #: Models left out under ``skip_bad_models``, with the reason.
        self.skipped = skipped

    @classmethod
    def load(cls, settings: InferenceSettings) -> ModelRepository:
        root = settings.models_dir
        if not root.is_dir():
            raise RepositoryError(f"model repository {root} is not a folder")
        models: dict[str, Model] = {}
        problems: dict[str, str] = {}
        for folder in sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            try:
                model = load_model(folder, settings)
            except ManifestError as error:
                problems[folder.name] = str(error)
                continue
            models[model.name] = model
            log.info(
                "model_loaded",
                model=model.name,
                version=model.manifest.version,
                backend=model.backend.describe(),
            )
        if problems and not settings.skip_bad_models:
            raise RepositoryError(
                "model repository has broken models (set skip_bad_models to serve the rest): "
                + "; ".join(problems.values())
            )
        for name, problem in problems.items():
            log.warning("model_skipped", model=name, reason=problem)
        unknown_overrides = sorted(set(settings.models) - set(models) - set(problems))
        if unknown_overrides:
            raise RepositoryError(f"models: overrides for unknown models {unknown_overrides}")
        return cls(models, problems)

    def get(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(name) from None
