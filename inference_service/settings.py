"""The inference service's settings: one pydantic model, from YAML, overridable by environment.

Precedence, highest first: ``FEDGATE_INFERENCE_*`` environment variables (``__`` separates
nesting levels, e.g. ``FEDGATE_INFERENCE_LISTEN__PORT``), then the YAML file given by
``--config``, then the defaults below. Unknown keys are errors.

```yaml
listen: {host: 127.0.0.1, port: 8081}
skip_bad_models: false          # refuse to start on a broken model (true: log and skip it)
concurrency:
  max_analyses: 2               # analyses running at once (fetch/preprocess overlaps the model)
  max_waiting: 2                # queued beyond those; past this: 429 with Retry-After
  retry_after_seconds: 5
onnxruntime:
  providers: [TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider]
  intra_op_threads: 0           # 0: onnxruntime's default (one per core)
admin_token_sha256: null        # sha256 of the token that may install models over HTTP
                                # (PUT /v2/repository/models/{name}); null: installing is off
models:                         # per-model overrides of the manifest
  nodule-detector: {backend: {type: oip, url: "http://triton:8000"}}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import SettingsConfigDict

from inference_service.manifest import BackendSpec
from observability import LogSettings
from serviceconfig import (
    ConfigError,
    EnvironmentFirst,
    describe_validation_error,
    read_settings_file,
)
from tlsconfig import ClientTls, ServerTls

__all__ = ["ConfigError", "InferenceSettings", "load_settings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8081
    #: HTTPS: ``{certificate, key, client_ca, require_client_certificate}`` (docs/tls.md).
    tls: ServerTls | None = None


class ConcurrencySettings(_Strict):
    max_analyses: Annotated[int, Field(ge=1)] = 2
    max_waiting: Annotated[int, Field(ge=0)] = 2
    retry_after_seconds: Annotated[int, Field(ge=1)] = 5
    #: Largest /v2 infer request body accepted (bytes).
    max_infer_request_bytes: Annotated[int, Field(gt=0)] = 2 * 1024**3


class OnnxRuntimeSettings(_Strict):
    """Execution providers in order of preference; those not installed are skipped (logged).

    ``CUDAExecutionProvider`` and ``TensorrtExecutionProvider`` come with the
    ``onnxruntime-gpu`` wheel; with only ``onnxruntime`` installed the CPU provider runs.
    Set ``require_first_provider`` to refuse to start when the first one is missing.
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    require_first_provider: bool = False
    intra_op_threads: Annotated[int, Field(ge=0)] = 0
    inter_op_threads: Annotated[int, Field(ge=0)] = 0
    #: onnxruntime's CPU memory arena keeps the largest run's buffers for the next one: faster
    #: (0.9 s against 1.8 s for the detector on 512x512x200 here) but 2.0 GB against 1.3 GB.
    memory_arena: bool = True


class DicomwebClientSettings(_Strict):
    timeout_seconds: Annotated[float, Field(gt=0)] = 120.0
    #: Ask the source for instances as stored (``transfer-syntax=*``) and decode here,
    #: instead of making the archive transcode.
    accept_any_transfer_syntax: bool = True
    #: Towards an https:// gateway (fetching the series, storing the results): ``{ca,
    #: certificate, key}``, the CA that signs its certificate and a client certificate.
    tls: ClientTls | None = None


class ModelOverride(_Strict):
    backend: BackendSpec | None = None


class InferenceSettings(EnvironmentFirst):
    """Everything the inference service reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="FEDGATE_INFERENCE_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    listen: ListenSettings = Field(default_factory=ListenSettings)
    models_dir: Path = Path("models")
    skip_bad_models: bool = False
    concurrency: ConcurrencySettings = Field(default_factory=ConcurrencySettings)
    onnxruntime: OnnxRuntimeSettings = Field(default_factory=OnnxRuntimeSettings)
    dicomweb: DicomwebClientSettings = Field(default_factory=DicomwebClientSettings)
    models: dict[str, ModelOverride] = Field(default_factory=dict)
    log: LogSettings = Field(default_factory=LogSettings)
    #: SHA-256 (hex) of the token that may install models (``PUT /v2/repository/models/{name}``,
    #: used by a gateway running a federated analysis); None: installing is off (403).
    admin_token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


def load_settings(path: Path | None, **overrides: Any) -> InferenceSettings:
    """Read ``path`` (YAML), the environment and ``overrides``, or raise ConfigError."""
    data = read_settings_file(path)
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return InferenceSettings(**data)
    except ValidationError as error:
        raise ConfigError(
            "invalid configuration: " + describe_validation_error(error, data)
        ) from error
