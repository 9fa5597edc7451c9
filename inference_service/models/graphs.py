"""The bundled models' ONNX graphs, written with the ``onnx`` helper API (no trained weights).

Both models are hand-designed for the synthetic chest CT phantoms (:mod:`fedgate.phantom`): air
about -1000 HU, lung parenchyma -850 HU, soft tissue 40 HU, lesions 30 HU, noise sigma 8 HU.
They compute for real (every voxel goes through the graph) and are deterministic, so the
repository built from them is byte-identical on every machine.

The lung field. A lesion is dense tissue *inside* a lung, so dense voxels of the chest wall,
mediastinum and spine must not count. The graph marks lung parenchyma (a 5x5 in-plane box
average of the "-950 < HU < -600" indicator above one half, which drops the one-voxel ring of
intermediate values where the body meets the air), then keeps a voxel as "inside the lung
field" when lung lies on both sides of it along its row *and* along its column (four
cumulative sums, each O(n)). The lungs are convex, so a voxel with lung on both sides along
a line lies inside one lung; the mediastinum has lung left and right but none above or below.

The detector (``nodule-detector``) outputs a lesion probability per voxel: a logistic of the
attenuation around the half-contrast level between lung and lesion ((-850 + 30) / 2 = -410
HU), times the lung field. Thresholding at 0.5 is thresholding at half contrast, which keeps
the partial-volume edge unbiased; the raw HU are used here on purpose, because smoothing
before a half-contrast threshold shrinks small spheres (a 6 mm lesion loses ~15 % of its
volume under a 3x3x3 blur).

The classifier (``nodule-presence``) works at 2 mm isotropic spacing (its manifest asks the
service to resample) and answers whether the study holds a lesion: it smooths the volume
with a 3x3x3 convolution (noise matters more at this scale than edge bias), counts the
voxels above half contrast inside the lung field shrunk by one voxel (where the smoothing
does not reach the lung's wall) and maps log(1 + count) through a logistic to P(present).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: The opset both graphs are written against (every operator used exists unchanged since).
OPSET = 17

LUNG_LOW_HU = -950.0
LUNG_HIGH_HU = -600.0
HALF_CONTRAST_HU = -410.0
#: Width of the logistic edge in HU: 880 HU of contrast against 8 HU of noise.
EDGE_WIDTH_HU = 25.0


def _const(name: str, value: np.ndarray | float | list[int]) -> onnx.TensorProto:
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return numpy_helper.from_array(array, name=name)


def _lung_field_nodes(
    hu: str, prefix: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes computing the lung field (1.0 inside a lung, else 0.0) of an [N,1,D,H,W] input."""
    p = prefix
    initializers = [
        _const(f"{p}lung_low", LUNG_LOW_HU),
        _const(f"{p}lung_high", LUNG_HIGH_HU),
        _const(f"{p}half", 0.5),
        _const(f"{p}zero", 0.0),
        _const(f"{p}axis_w", np.array(4, dtype=np.int64)),
        _const(f"{p}axis_h", np.array(3, dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Greater", [hu, f"{p}lung_low"], [f"{p}above_low"]),
        helper.make_node("Less", [hu, f"{p}lung_high"], [f"{p}below_high"]),
        helper.make_node("And", [f"{p}above_low", f"{p}below_high"], [f"{p}lung_band"]),
        helper.make_node("Cast", [f"{p}lung_band"], [f"{p}lung_band_f"], to=TensorProto.FLOAT),
        # 5x5 in-plane box average: isolated band voxels (edges, noise) fall below one half.
        helper.make_node(
            "AveragePool",
            [f"{p}lung_band_f"],
            [f"{p}lung_density"],
            kernel_shape=[1, 5, 5],
            pads=[0, 2, 2, 0, 2, 2],
            count_include_pad=0,
        ),
        helper.make_node("Greater", [f"{p}lung_density", f"{p}half"], [f"{p}lung"]),
        helper.make_node("Cast", [f"{p}lung"], [f"{p}lung_f"], to=TensorProto.FLOAT),
    ]
    sides = []
    for axis_name in ("w", "h"):
        for reverse in (0, 1):
            side = f"{p}lung_{axis_name}{reverse}"
            nodes.append(
                helper.make_node(
                    "CumSum",
                    [f"{p}lung_f", f"{p}axis_{axis_name}"],
                    [f"{side}_sum"],
                    reverse=reverse,
                )
            )
            nodes.append(helper.make_node("Greater", [f"{side}_sum", f"{p}zero"], [side]))
            sides.append(side)
    nodes += [
        helper.make_node("And", [sides[0], sides[1]], [f"{p}between_w"]),
        helper.make_node("And", [sides[2], sides[3]], [f"{p}between_h"]),
        helper.make_node("And", [f"{p}between_w", f"{p}between_h"], [f"{p}field"]),
        helper.make_node("Cast", [f"{p}field"], [f"{p}field_f"], to=TensorProto.FLOAT),
    ]
    return nodes, initializers, f"{p}field_f"


def _edge_nodes(
    hu: str, out: str, prefix: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """sigmoid((hu - half contrast) / edge width) into ``out``."""
    initializers = [
        _const(f"{prefix}half_contrast", HALF_CONTRAST_HU),
        _const(f"{prefix}edge_width", EDGE_WIDTH_HU),
    ]
    nodes = [
        helper.make_node("Sub", [hu, f"{prefix}half_contrast"], [f"{prefix}centered"]),
        helper.make_node("Div", [f"{prefix}centered", f"{prefix}edge_width"], [f"{prefix}logit"]),
        helper.make_node("Sigmoid", [f"{prefix}logit"], [out]),
    ]
    return nodes, initializers


def _finish(graph: onnx.GraphProto, name: str, version: str, description: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="fedgate",
        producer_version=version,
        doc_string=description,
    )
    model.ir_version = 8  # the IR of opset 17: loads in onnxruntime >= 1.13
    model.model_version = int(version.split(".")[0])
    helper.set_model_props(model, {"name": name, "version": version})
    onnx.checker.check_model(model, full_check=True)
    return model


def build_nodule_detector(version: str) -> onnx.ModelProto:
    """``volume`` [1,1,D,H,W] HU -> ``lesion_probability`` [1,1,D,H,W] in 0..1."""
    volume = helper.make_tensor_value_info("volume", TensorProto.FLOAT, [1, 1, "D", "H", "W"])
    probability = helper.make_tensor_value_info(
        "lesion_probability", TensorProto.FLOAT, [1, 1, "D", "H", "W"]
    )
    field_nodes, field_inits, field = _lung_field_nodes("volume", "field_")
    edge_nodes, edge_inits = _edge_nodes("volume", "dense", "edge_")
    nodes = [
        *field_nodes,
        *edge_nodes,
        helper.make_node("Mul", ["dense", field], ["lesion_probability"]),
    ]
    graph = helper.make_graph(
        nodes, "nodule_detector", [volume], [probability], initializer=field_inits + edge_inits
    )
    return _finish(graph, "nodule-detector", version, build_nodule_detector.__doc__ or "")


#: Dense-voxel count (at 2 mm spacing, after smoothing) where P(present) is one half; a 6 mm
#: lesion leaves about 3 such voxels, none is left without one (noise is 55 sigma away).
PRESENCE_HALF_COUNT = 1.0
PRESENCE_SLOPE = 6.0


def build_nodule_presence(version: str) -> onnx.ModelProto:
    """``volume`` [1,1,D,H,W] HU at 2 mm -> ``probabilities`` [1,2] (absent, present)."""
    volume = helper.make_tensor_value_info("volume", TensorProto.FLOAT, [1, 1, "D", "H", "W"])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])
    # 3x3x3 smoothing kernel: a separable binomial [1, 2, 1] / 4 on every axis.
    binomial = np.array([1.0, 2.0, 1.0]) / 4.0
    kernel = np.einsum("i,j,k->ijk", binomial, binomial, binomial).reshape(1, 1, 3, 3, 3)
    initializers = [
        _const("smoothing_kernel", kernel),
        _const("smoothing_pads", np.array([0, 0, 1, 1, 1, 0, 0, 1, 1, 1], dtype=np.int64)),
        _const("presence_half_count", np.log1p(PRESENCE_HALF_COUNT)),
        _const("presence_slope", PRESENCE_SLOPE),
        _const("logit_signs", np.array([[-0.5, 0.5]])),
    ]
    field_nodes, field_inits, field = _lung_field_nodes("volume", "field_")
    initializers.append(_const("half_contrast", HALF_CONTRAST_HU))
    nodes = [
        # Replicate the edge voxels: zero padding would be 0 HU, "tissue" on every border slice.
        helper.make_node("Pad", ["volume", "smoothing_pads"], ["padded"], mode="edge"),
        helper.make_node("Conv", ["padded", "smoothing_kernel"], ["smoothed"]),
        *field_nodes,
        # A hard threshold here: a logistic's tails, summed over 10^5 lung voxels, would count
        # as much as a small lesion.
        helper.make_node("Greater", ["smoothed", "half_contrast"], ["dense"]),
        helper.make_node("Cast", ["dense"], ["dense_f"], to=TensorProto.FLOAT),
        # Shrink the lung field by the smoothing's reach (one voxel): there the 3x3x3 average
        # mixes in the chest wall and mediastinum, which would pass for a small lesion.
        helper.make_node("Sub", ["one", field], ["outside_field"]),
        helper.make_node(
            "MaxPool",
            ["outside_field"],
            ["outside_grown"],
            kernel_shape=[3, 3, 3],
            pads=[1, 1, 1, 1, 1, 1],
        ),
        helper.make_node("Sub", ["one", "outside_grown"], ["inner_field"]),
        helper.make_node("Mul", ["dense_f", "inner_field"], ["lesion_map"]),
        helper.make_node("ReduceSum", ["lesion_map"], ["dense_count"], keepdims=0),
        helper.make_node("Add", ["dense_count", "one"], ["count_plus_one"]),
        helper.make_node("Log", ["count_plus_one"], ["log_count"]),
        helper.make_node("Sub", ["log_count", "presence_half_count"], ["log_ratio"]),
        helper.make_node("Mul", ["log_ratio", "presence_slope"], ["logit"]),
        helper.make_node("Mul", ["logit_signs", "logit"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers.append(_const("one", 1.0))
    graph = helper.make_graph(
        nodes,
        "nodule_presence",
        [volume],
        [probabilities],
        initializer=initializers + field_inits,
    )
    return _finish(graph, "nodule-presence", version, build_nodule_presence.__doc__ or "")
