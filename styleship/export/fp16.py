"""fp16 graphs with fp32 islands, derived from a bundle's fp32 ONNX.

fp16's largest finite value is 65504, so squaring anything above 256
overflows (deploy.md §2). Style transfer squares on purpose: mean/std
statistics, covariance and Gram matrices, the VAE's reparameterisation,
the VQ distance and argmax. Those stay fp32; the convolutions, which hold
nearly all the FLOPs, go to fp16; graph inputs and outputs stay fp32 so the
runtime feeds every precision alike.

A node stays fp32 when
* its op is a reduction, an instance norm, a square root, power, matrix product or lookup
  (`FP32_OPS`), or it feeds a reduction directly or through one more node
  (the squared deviations of a variance); or
* the exporter's module scope (`pkg.torch.onnx.name_scopes`) puts it inside a
  family's fp32 module (`FP32_SCOPES`: the ST-VAE transform with its
  covariance and VAE, the VQ-VAE style head), or it belongs to no module at
  all (the quantizer's lookup is called as a function, at the top level).

On TensorRT 11, which is always strongly typed, these types are the
precision: there is no other switch.

The conversion itself is onnxruntime's `convert_float_to_float16`. Up to
1.31 it inserts one fp16->fp32 Cast per fp32 consumer of an fp16 tensor,
every one named `<tensor>_cast_to_fp32`, so a tensor read by two kept
nodes (a bias shared by two fp32 nodes of the full-width ST-VAE) gets two
nodes writing the same name, and onnx's checker refuses the graph (1.32
shares one Cast). `merge_duplicate_casts` keeps the first of such
identical Casts, so every onnxruntime version gives the same valid graph.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from styleship.errors import ExportError, first_line

FP32_OPS = frozenset(
    {
        "ReduceMean",
        "InstanceNormalization",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "Sqrt",
        "Pow",
        "MatMul",
        "Gemm",
        "ArgMax",
        "Gather",
        "Exp",
        "Log",
        "Softmax",
    }
)
REDUCTIONS = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2"})
FP32_SCOPES = ("transform", "style_head")
SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def scopes(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            try:
                return list(ast.literal_eval(prop.value))
            except (ValueError, SyntaxError):
                return []
    return []


def in_fp32_module(node) -> bool:
    """Whether the exporter's scope puts `node` inside a family's fp32 module (`FP32_SCOPES`)."""
    modules = [s for s in scopes(node)[1:-1] if s]  # between the root '' and the op itself
    return any(part in FP32_SCOPES for s in modules for part in s.split("."))


def fp32_nodes(model) -> list[str]:
    """Names of the nodes that must stay fp32 (see the module docstring)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    keep: set[str] = set()
    for node in model.graph.node:
        node_scopes = scopes(node)
        modules = [s for s in node_scopes[1:-1] if s]
        top_level_math = node_scopes[:1] == [""] and not modules and node.op_type not in ("Shape",)
        if node.op_type in FP32_OPS or in_fp32_module(node) or top_level_math:
            keep.add(node.name)
        if node.op_type in REDUCTIONS:
            frontier = [producer[i] for i in node.input[:1] if i in producer]
            for _ in range(2):  # the square and the deviation before it
                keep.update(n.name for n in frontier)
                frontier = [producer[i] for n in frontier for i in n.input if i in producer]
    return sorted(keep)


def _cast_key(node) -> tuple:
    to = next((a.i for a in node.attribute if a.name == "to"), None)
    return (tuple(node.input), to)


def merge_duplicate_casts(model) -> int:
    """Drop every Cast that writes a name an identical Cast (same input, same `to`) already
    writes, and the repeated value_info entries of those names; returns how many went.

    Two nodes writing one name with different inputs are left alone: that graph is wrong
    in a way this cannot fix, and the checker says so.
    """
    graph = model.graph
    writers: dict[str, tuple] = {}
    kept, dropped = [], 0
    for node in graph.node:
        if node.op_type == "Cast" and len(node.output) == 1:
            out = node.output[0]
            if writers.get(out) == _cast_key(node):
                dropped += 1
                continue
            writers.setdefault(out, _cast_key(node))
        kept.append(node)
    if dropped:
        _replace(graph.node, kept)
    infos: dict = {}
    for info in graph.value_info:
        infos.setdefault(info.name, info)
    if len(infos) != len(graph.value_info):
        _replace(graph.value_info, list(infos.values()))
    return dropped


def _replace(field, items: list) -> None:
    """Set a repeated protobuf field to `items`, which are copied first: they may be
    elements of the field itself."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del field[:]
    field.extend(copies)


def convert(src: Path, dst: Path) -> dict:
    """Write the fp16 version of `src` to `dst`; return what stayed fp32, by name and op.

    A graph the checker refuses is an ExportError naming the file (the benchmark turns it
    into a failed row instead of stopping)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    keep = fp32_nodes(model)
    ops = Counter(n.op_type for n in model.graph.node if n.name in set(keep))
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    merged = merge_duplicate_casts(half)
    # The converter appends its input casts at the end; the checker (and TensorRT's
    # parser) want nodes in topological order.
    OnnxModel(half).topological_sort()
    try:
        onnx.checker.check_model(half)
    except onnx.checker.ValidationError as exc:
        raise ExportError(
            f"{src.name}: the fp16 graph is not valid ONNX ({first_line(exc)})"
        ) from None
    onnx.save(half, str(dst))
    return {
        "fp32_nodes": keep,
        "fp32_ops": dict(sorted(ops.items())),
        "nodes": len(model.graph.node),
        "merged_casts": merged,
    }
