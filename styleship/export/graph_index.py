"""What the ONNX graph passes read: constants, producers and readers, spatial means,
shape-only hops and the nodes an output needs.

Shared by the exact-tiling split (split_graph.py), which finds whole-image
statistics, and the norm fusion (norms.py), which finds the norms built on
them. Torch-free: onnx and numpy.
"""

from __future__ import annotations

import numpy as np

SHAPE_ONLY = {"Reshape", "Identity", "Expand", "Unsqueeze", "Squeeze"}


def graph_consts(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes by tensor name."""
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute:
            try:
                out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            except Exception:  # non-tensor constants (value_ints ...) are not axes we read
                continue
    return out


def spatial_mean(node, consts) -> bool:
    """True for a per-channel mean over the two spatial axes of an NCHW tensor."""
    from onnx import helper

    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1] in consts:
        axes = consts[node.input[1]].tolist()
    return axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]


def through_shape_ops(tensor: str, producer: dict) -> str:
    """`tensor` with reshape-like nodes above it skipped (they keep the values)."""
    while tensor in producer and producer[tensor].op_type in SHAPE_ONLY:
        tensor = producer[tensor].input[0]
    return tensor


def needed_nodes(nodes: list, outputs: set[str]) -> list:
    """The nodes `outputs` need, in their original (topological) order."""
    needed, keep = set(outputs), []
    for n in reversed(nodes):
        if needed.intersection(n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    return keep[::-1]


class GraphIndex:
    """A graph's constants, each tensor's producer and each tensor's readers."""

    def __init__(self, graph) -> None:
        self.consts = graph_consts(graph)
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def users(self, tensor: str, op: str) -> list:
        """The nodes of type `op` that read `tensor`."""
        return [n for n in self.consumers.get(tensor, []) if n.op_type == op]

    def other(self, node, tensor: str) -> str:
        """The input of a two-input node that is not `tensor`."""
        return node.input[1] if node.input[0] == tensor else node.input[0]

    def scalar(self, tensor: str) -> float | None:
        """The value of a one-element constant, else None."""
        value = self.consts.get(tensor)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None
