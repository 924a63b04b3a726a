"""FLOPs per image counted from an ONNX graph at concrete input shapes.

What counts: the multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm,
two FLOPs each. They hold nearly all the arithmetic of these models; bias adds,
normalisations and activations are left out, as is usual for a roofline (the
peak they are held against is a multiply-accumulate peak too).

Shapes: the graphs declare dynamic batch, height and width. Each node's
output shapes are found by onnx's own per-node shape inference, fed the
concrete shapes of its inputs and, for the small integer tensors that shape
arithmetic passes around (`Shape` → `Gather` → `Concat` → `Reshape`), their
values, which this walk computes with onnx's reference evaluator. Running
onnx's shape inference over the whole graph at once is not enough: it keeps
symbolic dims it cannot resolve through computed shapes (a `Reshape` to
`(B, C, H·W)`), exactly where the covariance MatMuls of ST-VAE sit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from styleship.errors import ModelError

COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
VALUE_LIMIT = 4096  # elements: tensors this small carry their values through the walk


@dataclass
class FlopCount:
    """Total FLOPs (2 per multiply-accumulate) and their split by operator type."""

    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    nodes: int = 0

    def add(self, op: str, macs: int) -> None:
        self.total += 2 * macs
        self.by_op[op] = self.by_op.get(op, 0) + 2 * macs
        self.nodes += 1


def _macs(node, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of one counted node, from its input and output shapes."""
    get = {a.name: a for a in node.attribute}
    x, w, y = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
    if node.op_type == "Conv":  # W: (Cout, Cin/group, *kernel); each output: Cin/g·k MACs
        return int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if node.op_type == "ConvTranspose":  # W: (Cin, Cout/group, *kernel); each input scatters
        return int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if node.op_type == "MatMul":  # (..., M, K) @ (..., K, N); a 1-D operand has K alone
        return int(np.prod(y, dtype=np.int64)) * int(x[-1])
    trans_a = get["transA"].i if "transA" in get else 0  # Gemm: A (M, K) or (K, M)
    return int(np.prod(y, dtype=np.int64)) * int(x[0] if trans_a else x[1])


def _one_node_shapes(node, model, known: dict, values: dict, dtypes: dict) -> list:
    """onnx's shape inference on `node` alone, its inputs concrete (and valued when small)."""
    import onnx
    from onnx import helper, numpy_helper

    inputs, inits = [], []
    for name in node.input:
        if not name or name in {i.name for i in inputs} | {t.name for t in inits}:
            continue
        if name in values:
            inits.append(numpy_helper.from_array(values[name], name))
        else:
            inputs.append(helper.make_tensor_value_info(name, dtypes[name], known[name]))
    graph = helper.make_graph([node], "one", inputs, [], inits)
    one = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        inferred = onnx.shape_inference.infer_shapes(one, strict_mode=True, data_prop=True)
    except Exception:  # an op onnx cannot infer (another domain): its outputs stay unknown
        return [None] * len(node.output)
    found = {v.name: v for v in inferred.graph.value_info}
    out = []
    for name in node.output:
        info = found.get(name)
        dims = info.type.tensor_type.shape.dim if info is not None else None
        if not dims and (info is None or not info.type.tensor_type.HasField("shape")):
            out.append(None)
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        out.append((shape, info.type.tensor_type.elem_type))
    return out


def _evaluate(node, model, values: dict) -> list[np.ndarray] | None:
    """The outputs of a node whose inputs are all small known tensors (shape arithmetic)."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    names = [n for n in dict.fromkeys(node.input) if n]
    inits = [numpy_helper.from_array(values[n], n) for n in names]
    outs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
    graph = helper.make_graph([node], "one", [], outs, inits)
    one = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        return [np.asarray(v) for v in ReferenceEvaluator(one).run(None, {})]
    except Exception:  # an op the reference evaluator lacks: its shape alone must do
        return None


def count_flops(model, input_shapes: Mapping[str, tuple[int, ...]]) -> FlopCount:
    """FLOPs of one run of `model` (an onnx.ModelProto or a path) with these input shapes.

    Raises ModelError when a counted node's shapes cannot be resolved, rather
    than report a number that silently leaves work out.
    """
    import onnx
    from onnx import numpy_helper

    if isinstance(model, str | Path):
        model = onnx.load(str(model))
    graph = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, int] = {}
    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        shapes[init.name], dtypes[init.name] = tuple(init.dims), init.data_type
        if int(np.prod(init.dims, dtype=np.int64)) <= VALUE_LIMIT:
            values[init.name] = numpy_helper.to_array(init)
    for inp in graph.input:
        if inp.name in shapes:
            continue
        if inp.name not in input_shapes:
            raise ModelError(f"no shape given for graph input {inp.name!r}")
        shapes[inp.name] = tuple(int(d) for d in input_shapes[inp.name])
        dtypes[inp.name] = inp.type.tensor_type.elem_type
    count = FlopCount()
    for node in graph.node:
        if node.op_type == "Constant":
            value = numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
            shapes[node.output[0]], values[node.output[0]] = value.shape, value
            dtypes[node.output[0]] = next(a.t.data_type for a in node.attribute)
            continue
        missing = [n for n in node.input if n and n not in shapes]
        if missing:
            raise ModelError(f"{node.op_type} {node.name!r}: no shape for {missing[0]!r}")
        if node.op_type == "Shape":
            attrs = {a.name: a.i for a in node.attribute}
            full = shapes[node.input[0]]
            value = np.asarray(full[attrs.get("start", 0) : attrs.get("end", len(full))], np.int64)
            shapes[node.output[0]], values[node.output[0]] = value.shape, value
            dtypes[node.output[0]] = onnx.TensorProto.INT64
            continue
        inferred = _one_node_shapes(node, model, shapes, values, dtypes)
        for name, got in zip(node.output, inferred):
            if name and got is not None and None not in got[0]:
                shapes[name], dtypes[name] = got
        small_in = node.input and all(n in values for n in node.input if n)
        small_out = all(
            int(np.prod(shapes.get(n, (VALUE_LIMIT,)), dtype=np.int64)) <= VALUE_LIMIT
            for n in node.output
            if n
        )
        computed = _evaluate(node, model, values) if small_in and small_out else None
        for name, value in zip(node.output, computed or []):
            shapes[name], values[name] = value.shape, value
            dtypes[name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        if node.op_type in COUNTED:
            needed = [node.input[0], node.input[1], node.output[0]]
            if any(n not in shapes for n in needed):
                raise ModelError(f"{node.op_type} {node.name!r}: shapes not resolved")
            count.add(node.op_type, _macs(node, shapes))
    return count
