"""A "user's own" model, as a MONAI/PyTorch export would arrive: other tensor names, channels-last
layout, a fixed input shape, logits needing a softmax, and a scalar output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MANIFEST = """
name: mean-density
version: "0.3.0"
algorithm_uid: 2.25.987654321
manufacturer: Test Lab
input:
  name: image
  modality: CT
  series: {min_slices: 4}
  shape: [16, 32, 32]
  intensity: {window: [-1000, 400], normalisation: window}
  axis_order: NDHWC
outputs:
  - kind: class_probabilities
    name: logits
    activation: softmax
    classes:
      - {label: low, concept: {value: L, scheme_designator: 99TEST, meaning: Low density}}
      - {label: high, concept: {value: H, scheme_designator: 99TEST, meaning: High density}}
    finding_class: high
    finding_type: {value: D, scheme_designator: 99TEST, meaning: Dense lung}
  - kind: scalar
    name: mean_window
    measurement: {value: M, scheme_designator: 99TEST, meaning: Mean windowed value}
    unit: {value: "1", scheme_designator: UCUM, meaning: no units}
    finding_type: {value: D, scheme_designator: 99TEST, meaning: Dense lung}
"""


def write_user_model(folder: Path) -> Path:
    """``folder/mean-density/{model.onnx, model.yaml}``: logits = 8 * (mean - 0.5) * [-1, 1]."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 16, 32, 32, 1])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])
    mean = helper.make_tensor_value_info("mean_window", TensorProto.FLOAT, [1])
    inits = [
        numpy_helper.from_array(np.array([0.5], dtype=np.float32), "half"),
        numpy_helper.from_array(np.array([[-8.0, 8.0]], dtype=np.float32), "signs"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean_window"], keepdims=0),
        helper.make_node("Sub", ["mean_window", "half"], ["centred"]),
        helper.make_node("Mul", ["signs", "centred"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "mean_density", [image], [logits, mean], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    target = folder / "mean-density"
    target.mkdir(parents=True)
    onnx.save(model, target / "model.onnx")
    (target / "model.yaml").write_text(MANIFEST)
    return target
