"""Study-level analysis (``POST /v1/analyses``): fetch, assemble, run, measure, report, store.

One analysis reads one series from a DICOMweb source, runs one model on it and writes the
result to a DICOMweb destination: a Comprehensive 3D SR (TID 1500) always, a SEG too when the
model has a mask output and found something. (A tabular model, trained across sites, reads
the study's reports instead of a series' pixels: :mod:`inference_service.tabular`.) The SR and
SEG UIDs are derived from (study, series, algorithm UID, version), so running the same analysis
again replaces the result in the destination instead of adding a second one.

Stages are timed (``fetch``, ``decode``, ``preprocess``, ``model``, ``postprocess``,
``sr_seg``, ``store``, ``total``, in seconds) and returned with the findings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydicom.dataset import Dataset

from inference_service import dicomweb, tabular
from inference_service.errors import PermanentError
from inference_service.manifest import ClassProbabilitiesOutput, MaskOutput, ScalarOutput
from inference_service.postprocess import (
    MaskResult,
    Result,
    class_result,
    mask_result,
    scalar_result,
)
from inference_service.preprocess import PreparedInput, from_layout, prepare_input, resample_to
from inference_service.report import (
    RESULTS_STATION_NAME,
    SegPlan,
    algorithm_of,
    build_findings,
)
from inference_service.repository import Model, ModelRepository
from inference_service.settings import InferenceSettings
from inference_service.volume import Volume, assemble_volume
from sr_writer import (
    Findings,
    FindingsError,
    ResultUIDs,
    build_seg,
    build_sr,
    derive_result_uids,
)

log = structlog.get_logger(__name__)

UID = Annotated[
    str,
    StringConstraints(max_length=64, pattern=r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"),
]


class AnalysisRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Annotated[str, Field(min_length=1, max_length=64)]
    study_instance_uid: UID
    series_instance_uid: UID
    source: dicomweb.Endpoint
    destination: dicomweb.Endpoint


@dataclass
class AnalysisOutcome:
    findings: Findings
    sr_sop_instance_uid: str
    seg_sop_instance_uid: str | None
    timings: dict[str, float]
    lesions: list[dict[str, Any]] = field(default_factory=list)
    #: A tabular model's input row, by feature (None: missing, then imputed).
    inputs: dict[str, float | None] | None = None

    def to_json(self) -> dict[str, Any]:
        inputs = {} if self.inputs is None else {"inputs": self.inputs}
        return {
            **inputs,
            "model": self.findings.algorithm.name if self.findings.algorithm else None,
            "model_version": self.findings.algorithm.version if self.findings.algorithm else None,
            "findings": [
                f.model_dump(mode="json", exclude_none=True) for f in self.findings.findings
            ],
            "lesions": self.lesions,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "seg_sop_instance_uid": self.seg_sop_instance_uid,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


class Timings(dict[str, float]):
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


def run_model(model: Model, prepared: PreparedInput) -> dict[str, np.ndarray]:
    names = [output.name for output in model.manifest.outputs]
    return model.backend.infer({model.manifest.input.name: prepared.tensor}, names)


def foreground(values: np.ndarray, spec: MaskOutput, axis_order: str) -> np.ndarray:
    """The foreground probability map of a mask output, still in the input's layout."""
    channel_axis = axis_order.find("C")
    if channel_axis >= 0 and values.ndim == len(axis_order):
        channels = values.shape[channel_axis]
        channel = spec.channel
        if channel is None:
            if channels != 1:
                raise PermanentError(
                    f"output {spec.name!r} has {channels} channels: its manifest must name the "
                    "foreground channel (and activation: softmax for logits)"
                )
            channel = 0
        if channel >= channels:
            raise PermanentError(
                f"output {spec.name!r}: channel {channel} asked, the output has {channels}"
            )
        if spec.activation == "softmax":
            shifted = values - values.max(axis=channel_axis, keepdims=True)
            exp = np.exp(shifted)
            values = exp / exp.sum(axis=channel_axis, keepdims=True)
        values = np.take(values, [channel], axis=channel_axis)
    if spec.activation == "sigmoid":
        values = 1.0 / (1.0 + np.exp(-values))
    return values


def postprocess(
    model: Model, outputs: dict[str, np.ndarray], prepared: PreparedInput, volume: Volume
) -> list[Result]:
    results: list[Result] = []
    axis_order = model.manifest.input.axis_order
    for spec in model.manifest.outputs:
        values = outputs[spec.name]
        if isinstance(spec, MaskOutput):
            values = foreground(values, spec, axis_order)
            expected = prepared.tensor.shape
            if values.shape != expected:
                raise PermanentError(
                    f"model {model.name}: output {spec.name!r} has shape {list(values.shape)}, "
                    f"the input's {list(expected)} (a mask must match its input)"
                )
            grid = from_layout(values, axis_order).astype(np.float32, copy=False)
            results.append(mask_result(volume, resample_to(grid, volume.values.shape), spec))
        elif isinstance(spec, ClassProbabilitiesOutput):
            results.append(class_result(values, spec))
        elif isinstance(spec, ScalarOutput):
            results.append(scalar_result(values, spec))
    return results


def lesion_summaries(results: list[Result]) -> list[dict[str, Any]]:
    """Per-lesion figures for the response (centroid included, which the SR keeps as a region)."""
    summaries: list[dict[str, Any]] = []
    masks = [r for r in results if isinstance(r, MaskResult)]
    for result in masks:
        for index, lesion in enumerate(result.lesions, start=1):
            summaries.append(
                {
                    "tracking_identifier": f"{result.output.segment_label} {index}",
                    "volume_mm3": round(lesion.volume_mm3, 2),
                    "diameter_mm": round(lesion.diameter_mm, 2),
                    "mean_value": round(lesion.mean_value, 1),
                    "centroid_mm": [round(c, 2) for c in lesion.centroid_mm],
                    "voxel_count": lesion.voxel_count,
                    "slices": list(lesion.slices),
                }
            )
    return summaries


class Analyzer:
    """Runs analyses synchronously (the app calls :meth:`run` in a worker thread)."""

    def __init__(self, repository: ModelRepository, settings: InferenceSettings) -> None:
        self.repository = repository
        self.settings = settings

    def run(self, request: AnalysisRequest) -> AnalysisOutcome:
        model = self.repository.get(request.model)
        if model.manifest.tabular is not None:
            # The series that triggered the job (e.g. the detector's SR) only says which
            # study: the model reads all of the study's (and patient's) reports.
            outcome = tabular.analyse_study(
                model,
                self.repository,
                self.settings,
                request.study_instance_uid,
                request.source,
                request.destination,
            )
            return AnalysisOutcome(
                findings=outcome.findings,
                sr_sop_instance_uid=outcome.sr_sop_instance_uid,
                seg_sop_instance_uid=None,
                timings=outcome.timings,
                inputs=outcome.inputs,
            )
        manifest = model.manifest
        timings = Timings()
        client = self.settings.dicomweb
        started = time.perf_counter()
        with timings.stage("fetch"):
            datasets = dicomweb.fetch_series(
                request.source,
                request.study_instance_uid,
                request.series_instance_uid,
                client.timeout_seconds,
                client.accept_any_transfer_syntax,
                client.tls,
            )
        with timings.stage("decode"):
            mismatched = [
                ds
                for ds in datasets
                if str(ds.get("SeriesInstanceUID")) != request.series_instance_uid
            ]
            if mismatched:
                raise PermanentError(
                    f"source returned instance {mismatched[0].SOPInstanceUID} of another series"
                )
            volume = assemble_volume(
                datasets, manifest.input, manifest.name, release_pixel_data=True
            )
        with timings.stage("preprocess"):
            prepared = prepare_input(volume, manifest.input)
        with timings.stage("model"):
            outputs = run_model(model, prepared)
        with timings.stage("postprocess"):
            results = postprocess(model, outputs, prepared, volume)
            # The tensor and the raw outputs (hundreds of MB for a CT) are done with; free them
            # before the SR/SEG and the store, where the next analysis's model may be running.
            del outputs, prepared
        uids = derive_result_uids(
            request.study_instance_uid,
            request.series_instance_uid,
            manifest.algorithm_uid,
            manifest.version,
        )
        with timings.stage("sr_seg"):
            try:
                findings, seg_plan = build_findings(
                    manifest, volume, results, uids.sr_sop_instance_uid, volume.datasets
                )
                seg = self._build_seg(seg_plan, volume, model, uids)
                sr = build_sr(findings, volume.datasets, uids=uids)
            except FindingsError as error:
                raise PermanentError(
                    f"model {model.name}: cannot report its results: {error}"
                ) from None
        with timings.stage("store"):
            to_store = [sr] if seg is None else [seg, sr]
            for result in to_store:
                # Station Name (General Equipment, C.7.5.1, Type 3): the machine that made
                # the instance. A PACS's forwarding rule recognises fedgate's results by it and
                # does not send them back to the gateway (deploy/orthanc's Lua script).
                result.StationName = RESULTS_STATION_NAME
            dicomweb.store_instances(
                request.destination,
                request.study_instance_uid,
                to_store,
                client.timeout_seconds,
                client.tls,
            )
        timings["total"] = time.perf_counter() - started
        log.info(
            "analysis_done",
            model=model.name,
            findings=len(findings.findings),
            sr=uids.sr_sop_instance_uid,
            seconds=round(timings["total"], 3),
        )
        return AnalysisOutcome(
            findings=findings,
            sr_sop_instance_uid=uids.sr_sop_instance_uid,
            seg_sop_instance_uid=None if seg is None else uids.seg_sop_instance_uid,
            timings=dict(timings),
            lesions=lesion_summaries(results),
        )

    @staticmethod
    def _build_seg(
        plan: SegPlan | None, volume: Volume, model: Model, uids: ResultUIDs
    ) -> Dataset | None:
        if plan is None:
            return None
        return build_seg(
            plan.labels,
            volume.datasets,
            plan.segments,
            algorithm_of(model.manifest),
            uids=uids,
        )
