"""Fold a QDQ int8 graph into a float graph with the same network.

A QDQ graph stores int8 weights behind DequantizeLinear nodes and simulates
int8 activations with QuantizeLinear → DequantizeLinear pairs. Engines that
do not run int8 (OpenVINO bf16, fp16 GPU graphs, TensorRT without
calibration) need the float network instead:
- DequantizeLinear of a constant becomes a float initializer with the same
  values, (q − zero_point) · scale, per channel along `axis`;
- every remaining QuantizeLinear and DequantizeLinear (activations, and the
  int8 Reshape/Transpose between a pair) is removed, so the float tensor
  flows straight through.

The result computes the float network the int8 one was quantised from, up to
the weights' int8 rounding; the activations' rounding and clipping are gone.
Torch-free: onnx and numpy only.
"""

from __future__ import annotations

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _dequantised(node, inits: dict[str, np.ndarray]) -> np.ndarray:
    q = inits[node.input[0]].astype(np.float32)
    scale = inits[node.input[1]].astype(np.float32)
    zero = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.float32(0)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and q.ndim > 0:  # per channel: broadcast along `axis`
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if zero.ndim else zero
    return ((q - zero) * scale).astype(np.float32)


def fold_qdq(model) -> int:
    """Rewrite `model` (an onnx ModelProto) in place as float; returns the QDQ nodes removed."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    alias: dict[str, str] = {}
    folded: dict[str, np.ndarray] = {}
    kept = []
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            folded[node.output[0]] = _dequantised(node, inits)
        elif node.op_type in QDQ_OPS:
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    outputs = {o.name for o in g.output}
    for name in outputs & alias.keys():  # keep graph output names: an Identity carries them
        kept.append(helper.make_node("Identity", [resolve(name)], [name]))
    for name in outputs & folded.keys():
        kept.append(helper.make_node("Identity", [name + "_folded"], [name]))
        folded[name + "_folded"] = folded.pop(name)
    removed = len(g.node) - len(kept)
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in kept for i in n.input}
    new_inits = [numpy_helper.from_array(v, k) for k, v in folded.items() if k in used]
    new_inits += [i for i in g.initializer if i.name in used and i.name not in folded]
    del g.initializer[:]
    g.initializer.extend(new_inits)
    return removed
