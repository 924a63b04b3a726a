"""Instance norms written out op by op, fused into ONNX InstanceNormalization (and back).

Exporters spell a per-channel spatial norm as a dozen elementwise ops:
torch's `(x - mean) * rsqrt(var + eps) * γ + β` (or `/ sqrt(var + eps)`, with
var_mean's second mean) and TensorFlow's
batch_normalization, `x·s + (β - mean·s)` with `s = γ·rsqrt(var + eps)`
(Magenta's conditional norms, through tf2onnx). Engines that plan for a fixed
shape fuse those ops back together, but OpenVINO does not on a model compiled
for dynamic shapes, which is what a folder of photos of different sizes runs
on: each op becomes a pass over the whole feature map. One InstanceNormalization
node runs as OpenVINO's MVN kernel at any shape. Measured on this project's
2-core EPYC, Magenta int8 on OpenVINO: seven 1 MP photos of six sizes
2.57 -> 1.51 s, 512² dynamic 61.9 -> 50.3 ms, 512² static 35.5 -> 33.9 ms;
ONNX Runtime int8 at 512² 125 -> 106 ms; fp32 outputs equal within 3e-6
(docs/benchmarks.md).

The γ and β that follow (per sample, from the style code) stay as a Mul and
an Add after a node with unit scale and zero bias, so batches with different
styles keep working. `expand_instance_norms` writes the node back out as a
mean and a variance, which is what the exact-tiling split (split_graph.py)
cuts at. The graph-reading helpers are export/graph_index.py's.
Torch-free: onnx and numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from styleship.export.graph_index import (
    SHAPE_ONLY,
    GraphIndex,
    drop_dead,
    rewrite_staged,
    spatial_mean,
    through_shape_ops,
)

if TYPE_CHECKING:
    from styleship.bundle.writer import BundleWriter

Log = Callable[[str], None]


@dataclass
class _Core:
    """The statistics of one written-out norm of `x`."""

    x: str
    means: set[str]  # spatial means of x (torch's var_mean computes a second one)
    devs: set[str]  # x − one of the means
    std: str  # sqrt(var + eps)
    inv: str | None  # 1 / std, where the graph forms it
    eps: float


def _mean_of(g: GraphIndex, tensor: str) -> str | None:
    """The input x when `tensor` is (through shape ops) a spatial mean of x."""
    node = g.producer.get(through_shape_ops(tensor, g.producer))
    if node is not None and spatial_mean(node, g.consts):
        return node.input[0]
    return None


def _after_shape_ops(g: GraphIndex, tensor: str) -> str:
    """`tensor` followed down through a reshape-like node that is its only reader of values
    (a Shape node reads only its shape: torch computes the target shape of a keepdim
    Reshape from it)."""
    while True:
        readers = [n for n in g.consumers.get(tensor, []) if n.op_type != "Shape"]
        if len(readers) != 1 or readers[0].op_type not in SHAPE_ONLY:
            return tensor
        tensor = readers[0].output[0]


def _core(g: GraphIndex, var_node) -> _Core | None:
    """The norm whose variance `var_node` is: mean((x − mean(x))²), then sqrt(· + eps)."""
    sq = g.producer.get(var_node.input[0])
    if sq is None or not (
        (sq.op_type == "Mul" and sq.input[0] == sq.input[1])
        or (sq.op_type == "Pow" and g.scalar(sq.input[1]) == 2.0)
    ):
        return None
    sub = g.producer.get(sq.input[0])
    if sub is None or sub.op_type != "Sub" or _mean_of(g, sub.input[1]) != sub.input[0]:
        return None
    x = sub.input[0]
    means = {n.output[0] for n in g.consumers.get(x, []) if spatial_mean(n, g.consts)}
    devs = {
        n.output[0] for n in g.users(x, "Sub") if n.input[0] == x and _mean_of(g, n.input[1]) == x
    }
    var = _after_shape_ops(g, var_node.output[0])  # torch's var(keepdim=True): Unsqueeze
    for add in g.users(var, "Add"):
        eps = g.scalar(g.other(add, var))
        sqrt = g.users(add.output[0], "Sqrt")
        if eps is None or eps <= 0 or len(sqrt) != 1:
            continue
        std = sqrt[0].output[0]
        recip = g.users(std, "Reciprocal")
        return _Core(x, means, devs, std, recip[0].output[0] if len(recip) == 1 else None, eps)
    return None


def _torch_affine(g: GraphIndex, core: _Core) -> tuple | None:
    """torch's `dev / std` or `dev * (1 / std)`: its output is the normalised tensor."""
    for dev in core.devs:
        for n in g.consumers.get(dev, []):
            if n.op_type == "Div" and list(n.input) == [dev, core.std]:
                return n.output[0], None, None
            inverse = n.op_type == "Mul" and core.inv is not None
            if inverse and through_shape_ops(g.other(n, dev), g.producer) == core.inv:
                return n.output[0], None, None
    return None


def _tf_affine(g: GraphIndex, core: _Core) -> tuple | None:
    """TensorFlow's `x·s + (β − mean·s)`, s = γ / std: (output, γ, β)."""
    if core.inv is None:
        return None
    for scale in g.users(core.inv, "Mul"):
        s, gamma = scale.output[0], g.other(scale, core.inv)
        on_x = [n for n in g.users(s, "Mul") if g.other(n, s) == core.x]
        on_mean = [
            n
            for n in g.users(s, "Mul")
            if through_shape_ops(g.other(n, s), g.producer) in core.means
        ]
        if len(on_x) != 1 or len(on_mean) != 1:
            continue
        y1 = on_x[0].output[0]
        for shift in g.users(y1, "Add"):
            sub = g.producer.get(g.other(shift, y1))
            if sub is None or sub.op_type != "Sub":
                continue
            if through_shape_ops(sub.input[1], g.producer) == on_mean[0].output[0]:
                return shift.output[0], gamma, sub.input[0]
    return None


def _channels(model) -> dict[str, int]:
    """Static channel counts of the graph's 4-D tensors (shape inference; H, W may be
    symbolic). Inferred afresh: a converter's stale value_info may contradict it."""
    from onnx import shape_inference

    fresh = type(model)()
    fresh.CopyFrom(model)
    del fresh.graph.value_info[:]
    inferred = shape_inference.infer_shapes(fresh)
    out = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            out[vi.name] = dims[1].dim_value
    return out


def fuse_instance_norms(model) -> int:
    """Rewrite `model` in place: every written-out instance norm becomes one
    InstanceNormalization node (γ and β, if any, a Mul and an Add after it).
    Returns how many were fused."""
    from onnx import helper, numpy_helper

    graph = model.graph
    g = GraphIndex(graph)
    channels = _channels(model)
    replace: dict[str, list] = {}  # output tensor -> the nodes that now produce it
    for node in list(graph.node):
        if not spatial_mean(node, g.consts):
            continue
        core = _core(g, node)
        if core is None or core.x not in channels:
            continue
        match = _torch_affine(g, core) or _tf_affine(g, core)
        if match is None:
            continue
        out, gamma, beta = match
        x, eps = core.x, core.eps
        tag = f"{node.output[0]}/instance_norm"
        c = channels[x]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.ones(c, np.float32), f"{tag}/unit"),
                numpy_helper.from_array(np.zeros(c, np.float32), f"{tag}/zero"),
            ]
        )
        normed = out if gamma is None else f"{tag}/out"
        nodes = [
            helper.make_node(
                "InstanceNormalization",
                [x, f"{tag}/unit", f"{tag}/zero"],
                [normed],
                name=tag,
                epsilon=eps,
            )
        ]
        if gamma is not None:
            nodes += [
                helper.make_node("Mul", [normed, gamma], [f"{tag}/scaled"], name=f"{tag}/γ"),
                helper.make_node("Add", [f"{tag}/scaled", beta], [out], name=f"{tag}/β"),
            ]
        replace[out] = nodes
    fused = len(replace)
    if not fused:
        return 0
    rebuilt = []
    for n in graph.node:  # the new nodes take the place of the old output's producer
        hit = next((o for o in n.output if o in replace), None)
        rebuilt.extend(replace.pop(hit) if hit else [n])
    del graph.node[:]
    graph.node.extend(rebuilt)
    drop_dead(graph)
    return fused


def _spatial_mean_node(src: str, dst: str, axes: str, opset: int):
    """ReduceMean over H and W, keeping dims: axes as an input from opset 18, before as an
    attribute."""
    from onnx import helper

    if opset >= 18:
        return helper.make_node("ReduceMean", [src, axes], [dst], keepdims=1)
    return helper.make_node("ReduceMean", [src], [dst], axes=[2, 3], keepdims=1)


def expand_instance_norms(model) -> int:
    """Rewrite `model` in place: every InstanceNormalization node written out as a
    spatial mean and variance (ReduceMean), the form split_graph finds. Returns how many.
    Narrow norms shipped on a flat view (narrow_norms.py) are made 4-D again first."""
    from onnx import helper, numpy_helper

    from styleship.export.narrow_norms import unflatten_narrow_norms

    unflatten_narrow_norms(model)

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    count, rebuilt = 0, []
    for n in graph.node:
        if n.op_type != "InstanceNormalization":
            rebuilt.append(n)
            continue
        count += 1
        x, scale, bias = n.input
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        t = f"{n.output[0]}/expanded"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([2, 3], np.int64), f"{t}/axes"),
                numpy_helper.from_array(np.array(eps, np.float32), f"{t}/eps"),
                numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64), f"{t}/nchw"),
            ]
        )
        rebuilt += [
            _spatial_mean_node(x, f"{t}/mean", f"{t}/axes", opset),
            helper.make_node("Sub", [x, f"{t}/mean"], [f"{t}/dev"]),
            helper.make_node("Mul", [f"{t}/dev", f"{t}/dev"], [f"{t}/sq"]),
            _spatial_mean_node(f"{t}/sq", f"{t}/var", f"{t}/axes", opset),
            helper.make_node("Add", [f"{t}/var", f"{t}/eps"], [f"{t}/var_eps"]),
            helper.make_node("Sqrt", [f"{t}/var_eps"], [f"{t}/std"]),
            helper.make_node("Div", [f"{t}/dev", f"{t}/std"], [f"{t}/normed"]),
            helper.make_node("Reshape", [scale, f"{t}/nchw"], [f"{t}/scale"]),
            helper.make_node("Reshape", [bias, f"{t}/nchw"], [f"{t}/bias"]),
            helper.make_node("Mul", [f"{t}/normed", f"{t}/scale"], [f"{t}/scaled"]),
            helper.make_node("Add", [f"{t}/scaled", f"{t}/bias"], [n.output[0]]),
        ]
    del graph.node[:]
    graph.node.extend(rebuilt)
    return count


def fuse_bundle_norms(writer: BundleWriter, log: Log = lambda msg: None) -> dict[str, int]:
    """The `norms` export step: fuse the instance norms of every staged fp32 graph, in
    place, before parity checks them against the source; a graph whose fused form does
    not compute the same outputs on a probe is left as it was. Returns {graph: count}."""
    fused = {}
    for name, _, count, why in rewrite_staged(writer, ("fp32",), fuse_instance_norms):
        if why:
            log(f"{name}: instance norms left written out: {why}")
        elif count:
            fused[name] = count
    if fused:
        log(f"instance norms fused: {', '.join(f'{g} {n}' for g, n in fused.items())}")
    return fused
