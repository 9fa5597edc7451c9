"""The end of a run: the final model as ONNX (skl2onnx) and the evaluation report.

``OUT/<plan name>/model.onnx`` is the standardisation and the model in one graph (a scikit-learn
``Pipeline`` of ``StandardScaler`` and the fitted estimator, converted by skl2onnx in float64,
so that it gives scikit-learn's probabilities to 1e-6); its input ``features`` is one row of the
plan's features in the plan's order, on the scales the plan reads them (years, 0/1, mm, %...);
its outputs are the label and the probabilities of [0, 1]. ``OUT/<plan name>/model.yaml`` is the
inference service's tabular manifest (``inference_service.manifest.TabularSpec``): each
feature's source in the study's reports (the plan's feature definitions), the pooled training
mean of each feature (what a missing value is imputed with under ``missing: impute_mean``), the
label's concept, the finding the prediction is reported as and the plan's threshold.

``OUT/report.json`` and ``OUT/report.md`` hold the run: sites, rounds, absences, refusals and
the per-site and pooled evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from gateway.learning.models import sklearn_estimator
from gateway.learning.plan import LoadedPlan

__all__ = ["MANIFEST_NAME", "MODEL_FILE_NAME", "fitted_pipeline", "write_model", "write_report"]

MODEL_FILE_NAME = "model.onnx"
MANIFEST_NAME = "model.yaml"
#: The ONNX input: one row per patient (or study), the plan's features in order, float64.
INPUT_NAME = "features"


def fitted_pipeline(
    loaded: LoadedPlan,
    parameters: Sequence[np.ndarray],
    mean: Sequence[float],
    scale: Sequence[float],
) -> Pipeline:
    """scikit-learn's pipeline of the run's result: the pooled standardisation, then the model."""
    n_features = len(loaded.plan.features)
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(mean, dtype=np.float64)
    scaler.scale_ = np.asarray(scale, dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = n_features
    scaler.n_samples_seen_ = 0
    estimator = sklearn_estimator(loaded.plan.model, list(parameters), n_features)
    return Pipeline([("standardise", scaler), ("model", estimator)])


def _algorithm_uid(sha256: str) -> str:
    """A DICOM UID (2.25 + UUID, PS3.5 B.2) derived from the plan: one plan, one algorithm."""
    return f"2.25.{uuid.UUID(bytes=bytes.fromhex(sha256)[:16]).int}"


def write_model(
    out: Path,
    loaded: LoadedPlan,
    parameters: Sequence[np.ndarray],
    mean: Sequence[float],
    scale: Sequence[float],
) -> Path:
    """``OUT/<plan name>/model.onnx`` and ``model.yaml``; returns the folder."""
    plan = loaded.plan
    pipeline = fitted_pipeline(loaded, parameters, mean, scale)
    onnx_model = convert_sklearn(
        pipeline,
        initial_types=[(INPUT_NAME, DoubleTensorType([None, len(plan.features)]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset=17,
    )
    folder = out / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / MODEL_FILE_NAME, onnx_model.SerializeToString())
    manifest = {
        "name": plan.name,
        "version": f"1.0.0+{loaded.sha256[:12]}",
        "algorithm_uid": _algorithm_uid(loaded.sha256),
        "manufacturer": "fedgate",
        "description": (
            f"{plan.model.family} trained by federated learning over {plan.rounds} rounds "
            f"(plan {loaded.sha256}). {plan.description}"
        ).strip(),
        "plan_sha256": loaded.sha256,
        "tabular": {
            "input": INPUT_NAME,
            "unit": plan.unit,
            "missing": plan.missing,
            "features": [feature.model_dump(mode="json") for feature in plan.features],
            "label": plan.label.model_dump(mode="json"),
            "threshold": plan.evaluation.threshold,
            "output": "probabilities",
            "means": [float(value) for value in mean],
            "finding": _prediction_finding(loaded),
        },
    }
    _write_atomically(
        folder / MANIFEST_NAME, yaml.safe_dump(manifest, sort_keys=False).encode("utf-8")
    )
    return folder


def _prediction_finding(loaded: LoadedPlan) -> dict[str, str]:
    """What the prediction's SR finding is: the label's ``equals`` code (the outcome whose
    probability is reported), or its concept for a numeric label; its meaning from DICOM's
    code dictionaries (PS3.16), else named after the plan (an admin may edit it)."""
    label = loaded.plan.label
    scheme, value = (label.equals or label.concept).split(":", 1)
    meaning = _code_meaning(scheme, value) or f"{loaded.plan.name} outcome"
    return {"value": value, "scheme_designator": scheme, "meaning": meaning[:64]}


def _code_meaning(scheme: str, value: str) -> str | None:
    from pydicom.sr._concepts_dict import concepts

    by_keyword: Any = concepts.get(scheme, {})
    for codes in by_keyword.values():
        if value in codes:
            return str(codes[value][0])
    return None


def write_report(out: Path, report: dict[str, Any]) -> None:
    """``OUT/report.json`` and a readable ``OUT/report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    _write_atomically(out / "report.json", json.dumps(report, indent=2).encode("utf-8"))
    _write_atomically(out / "report.md", _markdown(report).encode("utf-8"))


def _figure(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown(report: dict[str, Any]) -> str:
    if report.get("status") != "completed":
        return f"# Federated learning run: {report.get('status')}\n\n{report.get('reason', '')}\n"
    plan = report["plan"]
    lines = [
        f"# Federated learning run: {plan['name']}",
        "",
        f"Plan sha256 `{plan['sha256']}`, model {plan['model']}, {report['rounds']} rounds, "
        f"{report['training_rows']} training rows at {len(report['sites'])} sites "
        f"({', '.join(report['sites'])}), {report['seconds']} s.",
        "",
    ]
    for reason in report["refused"]:
        lines.append(f"- Refused: {reason}")
    for site, rounds in report["absent"].items():
        lines.append(f"- Absent: {site} in rounds {', '.join(str(r) for r in rounds)}")
    lines += [
        "",
        "## Evaluation on held-out rows",
        "",
        "| site | n | positives | AUC |",
        "|---|---|---|---|",
    ]
    evaluation = report["evaluation"]
    for site, figures in sorted(evaluation["sites"].items()):
        lines.append(
            f"| {site} | {int(figures['n'])} | {int(figures['positives'])} | "
            f"{_figure(figures.get('auc'))} |"
        )
    pooled = evaluation["pooled"]
    lines.append(
        f"| **pooled** | {pooled.get('n')} | {pooled.get('positives')} | "
        f"{_figure(pooled.get('auc'))} |"
    )
    confusion = pooled.get("confusion", {})
    lines += [
        "",
        "Pooled confusion matrix at the plan's threshold (— where a site suppressed a cell under "
        "its minimum cell size):",
        "",
        f"TP {_figure(confusion.get('tp'))}, FP {_figure(confusion.get('fp'))}, "
        f"TN {_figure(confusion.get('tn'))}, FN {_figure(confusion.get('fn'))}",
        "",
        "## Calibration (pooled, deciles of predicted risk)",
        "",
        "| decile | n | mean predicted | observed rate |",
        "|---|---|---|---|",
    ]
    for decile in pooled.get("calibration", []):
        lines.append(
            f"| {decile['decile']} | {decile['n']} | {decile['mean_predicted']:.3f} | "
            f"{decile['observed_rate']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + f".{hashlib.sha256(data).hexdigest()[:8]}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
