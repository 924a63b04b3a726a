"""Narrow instance norms, with the scale, shift and activation after them, on a flat view.

OpenVINO's CPU plugin keeps 4-D feature maps channels-last or in blocks of 8
or 16 channels. A map with fewer channels than that at full resolution
(Magenta's last two stages: 8 channels, then the 3 of the image) then runs
its norm and the per-sample γ·x + β and activation after it far below the
memory speed: in the profile of Magenta int8 at 1 MP on the 2-core EPYC,
the 3-channel chain took 22-41 ms and the 8-channel one 12-27 ms, more than
the convolutions around them. Seen as an (N, C, H·W) tensor, the same ops
run on one plane per channel.

So each InstanceNormalization with fewer than NARROW channels, and the Mul,
Add and optional activation that follow it (norms.py writes the per-sample
γ and β that way), is computed on a Reshape to (N, C, -1) of its input, with
γ and β reshaped alike, and the result is reshaped back to the input's own
shape. ONNX allows the norm on any rank from 3 (TensorRT's parser accepts
3-D too, expanding it to 4-D itself). Measured on Magenta int8, OpenVINO,
1 MP, dynamic shapes, interleaved runs: median 247 → 202 ms; with every
norm flattened (the 16- and 32-channel ones too) it was slower than this, so
wide norms keep their layout. ONNX Runtime: unchanged within noise.

This runs after the exact-tiling split, which reads the 4-D norms; every
precision of every graph is rewritten and checked against its former self
on a probe (graph_index.disagreement). Torch-free: onnx and numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from styleship.export.graph_index import GraphIndex, rewrite_staged

if TYPE_CHECKING:
    from styleship.bundle.writer import BundleWriter

Log = Callable[[str], None]

NARROW = 16  # channels: one of OpenVINO's channel blocks
ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "LeakyRelu"}


def _ranks(model) -> dict[str, int]:
    """Tensor ranks that ONNX shape inference can tell (graph inputs included)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # e.g. an fp16 twin whose recorded types inference disputes
        inferred = model
    ranks = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if info.type.tensor_type.HasField("shape"):
            ranks[info.name] = len(info.type.tensor_type.shape.dim)
    return ranks


def flatten_narrow_norms(model, narrow: int = NARROW) -> int:
    """Rewrite `model` in place as the module says; returns how many norms it flattened."""
    from onnx import helper, numpy_helper

    graph = model.graph
    g = GraphIndex(graph)
    ranks = _ranks(model)

    def rank(tensor: str) -> int | None:
        value = g.consts.get(tensor)
        return value.ndim if value is not None else ranks.get(tensor)

    before: dict[int, list] = {}
    after: dict[int, list] = {}
    flat: set[str] = set()  # tensors the view makes 3-D
    for norm in graph.node:
        scale = g.consts.get(norm.input[1]) if norm.op_type == "InstanceNormalization" else None
        if scale is None or scale.size >= narrow or rank(norm.input[0]) != 4:
            continue
        mul = g.only_reader(norm.output[0], {"Mul"})
        add = mul and g.only_reader(mul.output[0], {"Add"})
        if add is None:
            continue
        gamma, beta = g.other(mul, norm.output[0]), g.other(add, mul.output[0])
        if rank(gamma) != 4 or rank(beta) != 4:
            continue
        last = g.only_reader(add.output[0], ACTIVATIONS) or add
        t = f"{norm.output[0]}/flat"
        x = norm.input[0]
        # Each Reshape just before its reader: γ and β may be computed after the norm.
        before[id(norm)] = [
            helper.make_node("Reshape", [x, f"{t}/nc_"], [f"{t}/x"], f"{t}/x"),
            helper.make_node("Shape", [x], [f"{t}/shape"], f"{t}/shape"),
        ]
        before[id(mul)] = [
            helper.make_node("Reshape", [gamma, f"{t}/nc_"], [f"{t}/gamma"], f"{t}/gamma")
        ]
        before[id(add)] = [
            helper.make_node("Reshape", [beta, f"{t}/nc_"], [f"{t}/beta"], f"{t}/beta")
        ]
        graph.initializer.append(
            numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"{t}/nc_")
        )
        norm.input[0] = f"{t}/x"
        mul.input[list(mul.input).index(gamma)] = f"{t}/gamma"
        add.input[list(add.input).index(beta)] = f"{t}/beta"
        end = last.output[0]
        last.output[0] = f"{t}/y"
        after[id(last)] = [helper.make_node("Reshape", [f"{t}/y", f"{t}/shape"], [end], f"{t}/y")]
        flat.update(o for n in (norm, mul, add, last) for o in n.output)
    if before:
        # Shapes recorded for the chain (the int8 quantiser writes them) say 4-D; ONNX
        # Runtime would warn that they disagree with the 3-D view at every session.
        stale = [v for v in graph.value_info if v.name in flat]
        for v in stale:
            graph.value_info.remove(v)
        nodes = [m for n in graph.node for m in [*before.get(id(n), []), n, *after.get(id(n), [])]]
        del graph.node[:]
        graph.node.extend(nodes)
    return len(after)


def unflatten_narrow_norms(model) -> int:
    """Undo flatten_narrow_norms in place (its nodes are known by their names): the
    exact-tiling split reads 4-D norms, and `split.upgrade` may cut a graph shipped
    flat. Returns how many norms it restored."""
    graph = model.graph
    made = {n.name: n for n in graph.node if "/flat/" in n.name}
    restored, drop = 0, set()
    for norm in graph.node:
        t = f"{norm.output[0]}/flat" if norm.op_type == "InstanceNormalization" else None
        if t is None or norm.input[0] != f"{t}/x" or f"{t}/y" not in made:
            continue
        parts = {k: made.get(f"{t}/{k}") for k in ("x", "shape", "gamma", "beta", "y")}
        if any(v is None for v in parts.values()):
            continue
        original = {f"{t}/{k}": parts[k].input[0] for k in ("x", "gamma", "beta")}
        for n in graph.node:
            for i, name in enumerate(n.input):
                if name in original and n not in parts.values():
                    n.input[i] = original[name]
            if f"{t}/y" in n.output and n is not parts["y"]:
                n.output[list(n.output).index(f"{t}/y")] = parts["y"].output[0]
        drop.update(id(v) for v in parts.values())
        restored += 1
    if restored:
        nodes = [n for n in graph.node if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(nodes)
        used = {i for n in graph.node for i in n.input}
        keep = [i for i in graph.initializer if i.name in used or not i.name.endswith("/nc_")]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return restored


def flatten_bundle_norms(
    writer: BundleWriter, contents=(), styles=(), log: Log = lambda msg: None
) -> dict[str, dict]:
    """The `narrow_norms` export step: every precision of every staged graph, in place; a
    file whose rewritten form does not compute the same outputs on a probe and on the
    sample pictures is left as it was. Returns the record: {"flattened": {graph: {precision:
    count}}, "left": {"graph precision": why}}."""
    done: dict[str, dict] = {}
    left: dict[str, str] = {}
    flats = rewrite_staged(writer, None, flatten_narrow_norms, contents, styles)
    for name, precision, count, why in flats:
        if why:
            log(f"{name} {precision}: narrow norms left as they were: {why}")
            left[f"{name} {precision}"] = why
        elif count:
            done.setdefault(name, {})[precision] = count
    if done:
        log(f"narrow norms flattened: {', '.join(f'{g} {c}' for g, c in done.items())}")
    return {"flattened": done, "left": left}
