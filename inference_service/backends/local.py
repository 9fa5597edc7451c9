"""Run a model in this process with onnxruntime.

Execution providers come from the settings in order of preference (e.g. TensorRT, CUDA, CPU).
Providers that this onnxruntime build does not have are skipped with a warning, so one
configuration serves a GPU node (``onnxruntime-gpu`` installed) and a CPU-only laptop; set
``require_first_provider`` to refuse to start instead.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime
import structlog

from inference_service.errors import BadRequestError, PermanentError
from inference_service.settings import OnnxRuntimeSettings
from inference_service.tensors import TensorSpec

log = structlog.get_logger(__name__)

#: onnxruntime's type strings -> OIP datatypes.
_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(bool)": "BOOL",
}


class ProviderUnavailableError(Exception):
    pass


def choose_providers(settings: OnnxRuntimeSettings) -> list[str]:
    """The configured providers this onnxruntime has, in the configured order."""
    available = set(onnxruntime.get_available_providers())
    if settings.require_first_provider and settings.providers[0] not in available:
        raise ProviderUnavailableError(
            f"onnxruntime.providers: {settings.providers[0]} is required but this onnxruntime "
            f"offers only {sorted(available)} (install onnxruntime-gpu for CUDA/TensorRT)"
        )
    chosen = [p for p in settings.providers if p in available]
    skipped = [p for p in settings.providers if p not in available]
    if skipped:
        log.warning("onnxruntime_providers_missing", skipped=skipped, available=sorted(available))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # the fallback for operators others lack
    return chosen


def _spec(node: onnxruntime.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, _ORT_TYPES.get(node.type, node.type), shape)


class LocalBackend:
    platform = "onnxruntime_onnx"

    def __init__(self, model_path: Path, settings: OnnxRuntimeSettings) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = settings.memory_arena
        self.providers = choose_providers(settings)
        try:
            self.session = onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=self.providers
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise PermanentError(f"{model_path}: onnxruntime cannot load it: {error}") from None
        # One run at a time per model: onnxruntime already uses every core for one run, and two
        # runs would only fight over them; the analyses' other stages overlap it instead.
        self._run_lock = threading.Lock()
        self.inputs = tuple(_spec(i) for i in self.session.get_inputs())
        self.outputs = tuple(_spec(o) for o in self.session.get_outputs())

    def ready(self) -> bool:
        return True

    def describe(self) -> str:
        return f"onnxruntime {onnxruntime.__version__} ({', '.join(self.session.get_providers())})"

    def infer(
        self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        expected = {spec.name: spec for spec in self.inputs}
        unknown = sorted(set(inputs) - set(expected))
        missing = sorted(set(expected) - set(inputs))
        if unknown or missing:
            raise BadRequestError(
                f"inputs: expected {sorted(expected)}"
                + (f", unknown {unknown}" if unknown else "")
                + (f", missing {missing}" if missing else "")
            )
        for name, array in inputs.items():
            expected[name].check(array)
        known_outputs = [spec.name for spec in self.outputs]
        names = output_names or known_outputs
        unknown_outputs = sorted(set(names) - set(known_outputs))
        if unknown_outputs:
            raise BadRequestError(f"outputs: unknown {unknown_outputs}, known {known_outputs}")
        try:
            with self._run_lock:
                results = self.session.run(names, inputs)
        except Exception as error:  # e.g. a dimension the graph cannot take
            raise BadRequestError(f"the model refused the input: {error}") from None
        return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}
