"""The model repository: one folder per model, ``<name>/model.onnx`` + ``<name>/model.yaml``.

The layout is Triton's (one folder per model), with a manifest instead of ``config.pbtxt``
because the service needs more than tensor shapes: what series a model accepts and what its
outputs mean clinically. A broken model (manifest invalid, ONNX missing or not loadable,
manifest and graph disagreeing on tensor names) stops the service from starting with a
message naming the model and the field, unless ``skip_bad_models`` is set; then it is logged
and left out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from inference_service.backends import ModelBackend
from inference_service.backends.local import LocalBackend
from inference_service.backends.remote import RemoteBackend
from inference_service.errors import BadRequestError, InferenceServiceError, UnknownModelError
from inference_service.manifest import (
    MANIFEST_NAME,
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
    outputs = [spec.name for spec in model.backend.outputs]
    if manifest.tabular is not None:
        tabular = manifest.tabular
        if tabular.input not in inputs:
            raise ManifestError(
                manifest.name,
                f"tabular.input: {tabular.input!r} is not an input of the model {inputs}",
            )
        if tabular.output not in outputs:
            raise ManifestError(
                manifest.name,
                f"tabular.output: {tabular.output!r} is not an output of the model {outputs}",
            )
        return
    if manifest.input.name not in inputs:
        raise ManifestError(
            manifest.name,
            f"input.name: {manifest.input.name!r} is not an input of the model {inputs}",
        )
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


class InstallRefused(InferenceServiceError):
    """A model cannot be installed under this name (taken by other content): 409."""

    status_code = 409


#: The files of an installable model, as in every folder of the repository.
INSTALL_FILES = (MANIFEST_NAME, MODEL_FILE_NAME)


def install_model(
    repository: ModelRepository, name: str, files: dict[str, bytes], settings: InferenceSettings
) -> bool:
    """Install ``files`` (model.yaml, model.onnx) as model ``name``; True when installed now,
    False when exactly these files are installed under that name already (a retry).

    An installed model is never overwritten: other content under a taken name is refused
    (:class:`InstallRefused`). The model is checked as at start (manifest, graph, tensor
    names) in a hidden folder of the repository, then renamed into place, so a half-written
    model is never served, not even after a crash.
    """
    root = settings.models_dir
    target = root / name
    if name in repository.models or target.exists():
        if all(
            (target / file).is_file() and (target / file).read_bytes() == content
            for file, content in files.items()
        ):
            return False
        raise InstallRefused(
            f"model {name!r} is installed already with other content; an installed model is "
            "never overwritten: install this one under another name"
        )
    # A hidden folder of the repository (skipped when loading) on the same file system, holding
    # the model in a folder of its name: the manifest must name its folder.
    incoming = Path(tempfile.mkdtemp(prefix=f".incoming-{name}-", dir=root))
    try:
        staged = incoming / name
        staged.mkdir()
        for file, content in files.items():
            with open(staged / file, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        try:
            model = load_model(staged, settings)
        except ManifestError as error:
            raise BadRequestError(f"not an installable model: {error}") from None
        try:
            # rename(2) fails on an existing folder: two installs racing cannot both win.
            os.rename(staged, target)
        except OSError:
            raise InstallRefused(f"model {name!r} was installed meanwhile") from None
        # A new mapping, not an insertion: requests iterating the old one are undisturbed.
        repository.models = {
            **repository.models,
            name: Model(model.manifest, model.backend, target),
        }
        log.info("model_installed", model=name, version=model.manifest.version)
        return True
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
