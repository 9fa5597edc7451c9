"""The model manifest (``<repository>/<name>/model.yaml``): what a model wants and what it means.

A manifest declares who made the model (name, version, algorithm UID, manufacturer), the
input it wants (modality, series constraints, target spacing, intensity window and
normalisation, axis order) and how each output becomes findings:

- ``mask``: a per-voxel probability or label map; each connected component above ``threshold``
  is one finding with volume (mm3), maximal diameter (mm), mean attenuation and centroid, and
  the mask becomes a segment of a DICOM Segmentation;
- ``class_probabilities``: a probability per class; the class of ``finding_class`` is reported
  as a qualitative finding (present/absent) with its probability as the score;
- ``scalar``: one number, reported as a measurement with its UCUM unit.

A **tabular** manifest (``tabular:`` instead of ``input``/``outputs``; what ``fedgate learn run``
exports, :mod:`hub.learning.export`) describes a model that reads no image: its input is one
row of a training plan's features (:mod:`tabular.features`), which the service computes for
the study from its reports (:mod:`inference_service.tabular`), and its output the
probabilities of the plan's label.

Concepts are coded as in DICOM (PS3.3 8.8): code value, coding scheme designator, meaning.
Errors name the model and the dotted field (``nodule-detector: input.modality: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serviceconfig import describe_validation_error
from tabular.features import Feature, Label
from tlsconfig import ClientTls

UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
MANIFEST_NAME = "model.yaml"
MODEL_FILE_NAME = "model.onnx"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Concept(_Strict):
    """A coded concept: (code value, coding scheme designator, code meaning)."""

    value: Annotated[str, Field(min_length=1, max_length=64)]
    scheme_designator: Annotated[str, Field(min_length=1, max_length=16)]
    meaning: Annotated[str, Field(min_length=1, max_length=64)]


class IntensitySpec(_Strict):
    """How Hounsfield units (or modality values after rescale) become the tensor's values.

    ``window`` clips to [low, high] first; then ``normalisation``: ``none`` keeps the values,
    ``window`` maps the window to 0..1, ``zscore`` subtracts the mean and divides by the SD,
    ``linear`` computes ``value * scale + offset``.
    """

    window: tuple[float, float] | None = None
    normalisation: Literal["none", "window", "zscore", "linear"] = "none"
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _window_ordered(self) -> IntensitySpec:
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ValueError("window must be [low, high] with low < high")
        if self.normalisation == "window" and self.window is None:
            raise ValueError("normalisation 'window' needs a window")
        return self


class SeriesConstraints(_Strict):
    min_slices: Annotated[int, Field(ge=1)] = 1
    max_slices: Annotated[int, Field(ge=1)] | None = None
    body_parts: tuple[str, ...] = ()


class InputSpec(_Strict):
    """The input tensor and the series it may be computed from."""

    name: str = "volume"
    modality: Annotated[str, Field(min_length=2, max_length=16)] = "CT"
    series: SeriesConstraints = Field(default_factory=SeriesConstraints)
    #: Resample to this spacing (mm, in axis order z, y, x) first; None keeps the native grid.
    spacing_mm: tuple[float, float, float] | None = None
    #: Resample (after spacing) to exactly this shape (z, y, x); None keeps the shape.
    shape: tuple[int, int, int] | None = None
    intensity: IntensitySpec = Field(default_factory=IntensitySpec)
    #: Layout of the tensor: N (batch of one), C (one channel), D/H/W (slice, row, column).
    axis_order: Literal["NCDHW", "NDHWC", "DHW", "NCHWD"] = "NCDHW"
    datatype: Literal["FP32", "FP16", "FP64"] = "FP32"

    @model_validator(mode="after")
    def _positive_geometry(self) -> InputSpec:
        if self.spacing_mm is not None and min(self.spacing_mm) <= 0:
            raise ValueError("spacing_mm must be positive")
        if self.shape is not None and min(self.shape) <= 0:
            raise ValueError("shape must be positive")
        return self


class Measurements(_Strict):
    volume: bool = True
    diameter: bool = True
    mean_intensity: bool = True


class MaskOutput(_Strict):
    """A per-voxel map in the input's layout (same D/H/W as the tensor the model got).

    A one-channel probability map (``activation: none``) or logit map (``sigmoid``), or
    several channels of which ``channel`` is the foreground (``softmax`` across channels, as
    a MONAI network with ``out_channels=2`` exports).
    """

    kind: Literal["mask"] = "mask"
    name: str
    activation: Literal["none", "sigmoid", "softmax"] = "none"
    #: The foreground channel of a multi-channel output (None: the output has one channel).
    channel: Annotated[int, Field(ge=0)] | None = None
    threshold: float = 0.5
    #: Components smaller than this are noise, not findings.
    min_volume_mm3: Annotated[float, Field(ge=0)] = 10.0
    finding_type: Concept
    finding_site: Concept | None = None
    segment_label: Annotated[str, Field(min_length=1, max_length=64)]
    segment_category: Concept
    segment_type: Concept
    measurements: Measurements = Field(default_factory=Measurements)
    #: Unit of the intensities the mean is taken over (``[hnsf'U]`` for CT).
    intensity_unit: Concept = Concept(
        value="[hnsf'U]", scheme_designator="UCUM", meaning="Hounsfield unit"
    )


class ClassLabel(_Strict):
    label: str
    concept: Concept


class ClassProbabilitiesOutput(_Strict):
    """A probability per class, reported as one finding with a coded qualitative evaluation.

    The evaluation ``evaluation`` (default DCM "Presence of property") takes the concept of
    ``finding_class`` when its probability reaches ``decision_threshold``, else the concept
    of the most probable other class; the finding's probability is that of ``finding_class``.
    """

    kind: Literal["class_probabilities"] = "class_probabilities"
    name: str
    classes: tuple[ClassLabel, ...] = Field(min_length=2)
    #: What turns the output into probabilities: none (already), softmax or sigmoid (logits).
    activation: Literal["none", "softmax", "sigmoid"] = "none"
    #: The class whose probability is reported (e.g. "present").
    finding_class: str
    finding_type: Concept
    evaluation: Concept = Concept(
        value="121052", scheme_designator="DCM", meaning="Presence of property"
    )
    #: ``finding_class`` is the decision when its probability reaches this.
    decision_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _finding_class_exists(self) -> ClassProbabilitiesOutput:
        labels = [c.label for c in self.classes]
        if self.finding_class not in labels:
            raise ValueError(f"finding_class {self.finding_class!r} is not one of {labels}")
        return self


class ScalarOutput(_Strict):
    kind: Literal["scalar"] = "scalar"
    name: str
    measurement: Concept
    unit: Concept
    finding_type: Concept


OutputSpec = Annotated[
    MaskOutput | ClassProbabilitiesOutput | ScalarOutput, Field(discriminator="kind")
]


class OnnxRuntimeBackend(_Strict):
    type: Literal["onnxruntime"] = "onnxruntime"


class OipBackend(_Strict):
    """Run the model on a remote Open Inference Protocol v2 server (Triton, KServe, fedgate)."""

    type: Literal["oip"] = "oip"
    url: Annotated[str, Field(pattern=r"^https?://")]
    #: The model's name on that server (default: this model's name).
    model_name: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    #: Send tensors with the binary tensor data extension (Triton, KServe) instead of JSON lists.
    binary_data: bool = True
    #: Towards an https:// server: ``{ca, certificate, key}`` (docs/tls.md).
    tls: ClientTls | None = None


BackendSpec = Annotated[OnnxRuntimeBackend | OipBackend, Field(discriminator="type")]


class TabularSpec(_Strict):
    """A model of a training plan's features (``fedgate learn run``'s ``model.yaml``).

    ``features`` are the plan's own definitions, in the order of the model's input columns;
    ``missing`` what the plan did with a missing value: ``drop`` (the study is refused with the
    absent features named) or ``impute_mean`` (the value is replaced by ``means``, the pooled
    training mean of each feature). The prediction is reported as ``finding`` with the
    probability of the label (``output``'s second column) and, at ``threshold``, present or
    absent.
    """

    input: str = "features"
    unit: Literal["patient", "study"] = "patient"
    missing: Literal["drop", "impute_mean"] = "drop"
    features: tuple[Feature, ...] = Field(min_length=1)
    label: Label
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    output: str = "probabilities"
    #: Per feature, in order: the pooled mean of the training rows (imputed missing values).
    means: tuple[float, ...] | None = None
    #: What the prediction's SR finding is (by default, what the label's code names).
    finding: Concept

    @model_validator(mode="after")
    def _means_for_imputation(self) -> TabularSpec:
        if self.means is not None and len(self.means) != len(self.features):
            raise ValueError(f"means: {len(self.means)} values for {len(self.features)} features")
        if self.missing == "impute_mean" and self.means is None:
            raise ValueError("missing impute_mean needs the training means (means)")
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)


class ModelManifest(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    version: Annotated[str, Field(min_length=1, max_length=64)]
    algorithm_uid: Annotated[str, Field(max_length=64, pattern=UID_PATTERN)]
    manufacturer: Annotated[str, Field(min_length=1, max_length=64)]
    description: str = ""
    input: InputSpec = Field(default_factory=InputSpec)
    outputs: tuple[OutputSpec, ...] = ()
    backend: BackendSpec = Field(default_factory=OnnxRuntimeBackend)
    #: A model of a training plan's features instead of an image model.
    tabular: TabularSpec | None = None
    #: The training plan a federated model was trained by (its sha256), for the record.
    plan_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    @model_validator(mode="after")
    def _distinct_outputs(self) -> ModelManifest:
        if self.tabular is not None:
            if self.outputs:
                raise ValueError("outputs: a tabular model has its output in tabular.output")
            return self
        if not self.outputs:
            raise ValueError("outputs: at least one output (or a tabular section)")
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"outputs: names must be distinct, got {names}")
        if sum(isinstance(o, MaskOutput) for o in self.outputs) > 1:
            raise ValueError("outputs: at most one mask output (one SEG per analysis)")
        return self

    @property
    def mask_output(self) -> MaskOutput | None:
        return next((o for o in self.outputs if isinstance(o, MaskOutput)), None)


class ManifestError(Exception):
    """A manifest cannot be used; the message names the model and the field."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(f"{model}: {message}")
        self.model = model


def parse_manifest(data: Any, model: str) -> ModelManifest:
    """Validate ``data`` (parsed YAML) for the model folder ``model``, or raise ManifestError."""
    if not isinstance(data, dict):
        raise ManifestError(model, f"{MANIFEST_NAME} must hold a mapping at the top level")
    try:
        manifest = ModelManifest.model_validate(data)
    except ValidationError as error:
        raise ManifestError(model, describe_validation_error(error)) from None
    if manifest.name != model:
        raise ManifestError(model, f"name: {manifest.name!r} differs from its folder {model!r}")
    return manifest


def load_manifest(folder: Path) -> ModelManifest:
    """Read ``folder/model.yaml``; the folder's name is the model's name."""
    model = folder.name
    path = folder / MANIFEST_NAME
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(model, f"{MANIFEST_NAME} is missing") from None
    except OSError as error:
        raise ManifestError(model, f"cannot read {MANIFEST_NAME}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ManifestError(model, f"{MANIFEST_NAME} is not valid YAML: {error}") from None
    return parse_manifest(data, model)


def dump_manifest(manifest: ModelManifest) -> str:
    """The manifest as YAML, keys in declaration order (what ``fedgate models build`` writes)."""
    data = manifest.model_dump(mode="json", exclude_defaults=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
