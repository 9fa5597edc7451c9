"""Where a model runs: onnxruntime in this process, or a remote Open Inference Protocol server."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from inference_service.tensors import TensorSpec


class ModelBackend(Protocol):
    """Runs one model. ``infer`` is called from worker threads and must be thread-safe."""

    platform: str

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def ready(self) -> bool: ...

    def infer(
        self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def describe(self) -> str: ...
