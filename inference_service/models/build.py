"""Build the bundled model repository (``fedgate models build --out DIR``).

Writes ``nodule-detector`` and ``nodule-presence`` as ``<DIR>/<name>/model.onnx`` with their
``model.yaml``. The graphs come from :mod:`inference_service.models.graphs`, so the build
needs no download and gives byte-identical files on every run (the test checks the SHA-256).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import onnx

from inference_service.manifest import (
    MANIFEST_NAME,
    MODEL_FILE_NAME,
    ClassLabel,
    ClassProbabilitiesOutput,
    Concept,
    InputSpec,
    IntensitySpec,
    MaskOutput,
    ModelManifest,
    SeriesConstraints,
    dump_manifest,
)
from inference_service.models import graphs

VERSION = "1.0.0"
MANUFACTURER = "fedgate"

NODULE = Concept(value="27925004", scheme_designator="SCT", meaning="Nodule")
LUNG = Concept(value="39607008", scheme_designator="SCT", meaning="Lung")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Concept(
    value="49755003", scheme_designator="SCT", meaning="Morphologically Abnormal Structure"
)
PRESENT = Concept(value="121053", scheme_designator="DCM", meaning="Present")
ABSENT = Concept(value="121054", scheme_designator="DCM", meaning="Absent")


def algorithm_uid(name: str) -> str:
    """The bundled model's stable algorithm UID (2.25 root, derived from its name)."""
    digest = hashlib.sha256(f"fedgate-algorithm|{name}".encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _ct_chest_input(**kwargs: object) -> InputSpec:
    return InputSpec.model_validate(
        {
            "name": "volume",
            "modality": "CT",
            "series": SeriesConstraints(min_slices=8),
            # Keep the whole HU range the phantoms use: air -1000 .. bone 700.
            "intensity": IntensitySpec(window=(-1024.0, 3071.0), normalisation="none"),
            "axis_order": "NCDHW",
            **kwargs,
        }
    )


def nodule_detector_manifest() -> ModelManifest:
    return ModelManifest(
        name="nodule-detector",
        version=VERSION,
        algorithm_uid=algorithm_uid("nodule-detector"),
        manufacturer=MANUFACTURER,
        description=(
            "Lung nodule detector/segmenter for the fedgate chest CT phantoms: lesion probability "
            "per voxel (half-contrast logistic inside the lung field)."
        ),
        input=_ct_chest_input(),
        outputs=(
            MaskOutput(
                name="lesion_probability",
                threshold=0.5,
                min_volume_mm3=10.0,
                finding_type=NODULE,
                finding_site=LUNG,
                segment_label="Nodule",
                segment_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                segment_type=NODULE,
            ),
        ),
    )


def nodule_presence_manifest() -> ModelManifest:
    return ModelManifest(
        name="nodule-presence",
        version=VERSION,
        algorithm_uid=algorithm_uid("nodule-presence"),
        manufacturer=MANUFACTURER,
        description=(
            "Study-level lung nodule presence classifier for the fedgate chest CT phantoms, at "
            "2 mm isotropic spacing."
        ),
        input=_ct_chest_input(spacing_mm=(2.0, 2.0, 2.0)),
        outputs=(
            ClassProbabilitiesOutput(
                name="probabilities",
                classes=(
                    ClassLabel(label="absent", concept=ABSENT),
                    ClassLabel(label="present", concept=PRESENT),
                ),
                finding_class="present",
                finding_type=NODULE,
            ),
        ),
    )


BUNDLED: dict[str, tuple[Callable[[], ModelManifest], Callable[[str], onnx.ModelProto]]] = {
    "nodule-detector": (nodule_detector_manifest, graphs.build_nodule_detector),
    "nodule-presence": (nodule_presence_manifest, graphs.build_nodule_presence),
}


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def build_repository(out: Path) -> dict[str, Path]:
    """Write every bundled model into ``out``; returns name -> model folder."""
    written: dict[str, Path] = {}
    for name, (make_manifest, make_graph) in BUNDLED.items():
        manifest = make_manifest()
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        graph = make_graph(manifest.version)
        _write_atomically(folder / MODEL_FILE_NAME, graph.SerializeToString(deterministic=True))
        _write_atomically(folder / MANIFEST_NAME, dump_manifest(manifest).encode())
        written[name] = folder
    return written
