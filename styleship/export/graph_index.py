"""What the ONNX graph passes read: constants, producers and readers, spatial means,
shape-only hops and the nodes an output needs; the sweep of what a rewrite left
unread; and the check that a rewrite computes what the graph computed before.

Shared by the exact-tiling split (split_graph.py), which finds whole-image
statistics, and by the export steps that rewrite a staged file in place: the
norm fusion (norms.py), the sub-pixel upsampling (upsample.py) and the narrow
norms (narrow_norms.py). Torch-free: onnx, numpy and, for the check, ONNX
Runtime.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from styleship.errors import first_line

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


def drop_dead(graph) -> None:
    """Remove, in place, the nodes no graph output needs, then the initializers nothing
    reads (one that is also a graph input stays: it is a default a caller may override)."""
    outputs = {o.name for o in graph.output}
    keep = needed_nodes(list(graph.node), outputs)
    used = outputs | {i for n in keep for i in n.input} | {i.name for i in graph.input}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(inits)


class GraphIndex:
    """A graph's constants, its outputs, each tensor's producer and each tensor's readers."""

    def __init__(self, graph) -> None:
        self.consts = graph_consts(graph)
        self.outputs = {o.name for o in graph.output}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def users(self, tensor: str, op: str) -> list:
        """The nodes of type `op` that read `tensor`."""
        return [n for n in self.consumers.get(tensor, []) if n.op_type == op]

    def only_reader(self, tensor: str, ops: set[str] | None = None):
        """The one node that reads `tensor` (of a type in `ops`, if given), or None where
        more read it or it is a graph output: a rewrite of that node then changes what
        nothing else sees."""
        readers = self.consumers.get(tensor, [])
        if len(readers) != 1 or tensor in self.outputs:
            return None
        return readers[0] if ops is None or readers[0].op_type in ops else None

    def other(self, node, tensor: str) -> str:
        """The input of a two-input node that is not `tensor`."""
        return node.input[1] if node.input[0] == tensor else node.input[0]

    def scalar(self, tensor: str) -> float | None:
        """The value of a one-element constant, else None."""
        value = self.consts.get(tensor)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def probe(specs) -> dict[str, np.ndarray]:
    """Inputs for a before/after comparison: batch 2 (per-sample γ and β differ), other
    dynamic sides 64 and 48 in turn (a rewrite that swapped height and width would show),
    seeded values in [0, 1)."""
    rng = np.random.default_rng(0)
    feed = {}
    for spec in specs:
        sides = iter([64, 48] * 4)
        shape = [
            d if isinstance(d, int) else 2 if d == "batch" else next(sides) for d in spec.shape
        ]
        feed[spec.name] = rng.random(shape).astype(spec.dtype)
    return feed


def disagreement(before, after, specs, feeds: Sequence[dict] = ()) -> str | None:
    """Why a rewritten graph is not the same function as before on a probe, or on any of
    `feeds` (ONNX Runtime CPU), or None.

    `wrap`'s parity gate only checks shapes, so a foreign graph that a pattern matched
    wrongly would otherwise ship; the passes keep such a graph as it was. `feeds` are real
    pictures (samples.sample_feeds): where a model's norms amplify the rounding of a
    rewrite beyond the tolerance, the rewrite is refused rather than the export."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        sessions = [ort.InferenceSession(m.SerializeToString(), options) for m in (before, after)]
        for feed in [probe(specs), *feeds]:
            outs = [s.run(None, feed) for s in sessions]
            for a, b in zip(*outs):
                if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-4):
                    worst = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
                    return f"its outputs differ from the graph's before (max abs {worst:.1e})"
    except Exception as exc:  # ONNX Runtime's errors derive from Exception alone
        return f"cannot run it to compare ({first_line(exc, 120)})"
    return None


def rewrite_checked(
    path: Path, specs, rewrite: Callable[[Any], Any], feeds: Callable[[], Sequence[dict]]
) -> tuple[Any, str | None]:
    """Rewrite the ONNX file at `path` with `rewrite` (in place on the loaded model; it
    returns what it did, falsy where nothing matched) and write it back, atomically, only
    if onnx's checker passes it and it computes what the file did before on a probe and on
    `feeds()` (called only once there is something to check). Returns (what `rewrite`
    returned, why the file was left as it was, or None)."""
    import copy

    import onnx

    from styleship import _atomic

    model = onnx.load(str(path))
    before = copy.deepcopy(model)
    done = rewrite(model)
    if not done:
        return done, None
    onnx.checker.check_model(model)
    why = disagreement(before, model, specs, feeds())
    if why is None:
        _atomic.write_bytes(path, model.SerializeToString())
    return done, why


def rewrite_staged(
    writer, precisions: Sequence[str] | None, rewrite: Callable[[Any], Any], contents=(), styles=()
) -> Iterator[tuple[str, str, Any, str | None]]:
    """rewrite_checked on each staged file of `precisions` (None: all), graph by graph,
    checked on the sample pictures too where `contents` are given (samples.staged_feeds).
    Yields (graph, precision, what `rewrite` returned, why the file was left or None):
    what each export step records of it is its own."""
    from styleship.export.samples import staged_feeds

    feeds = staged_feeds(writer, contents, styles)
    for name, info in writer.manifest.graphs.items():
        for precision, file in info.files.items():
            if precisions is None or precision in precisions:
                path = writer.stage / file
                done, why = rewrite_checked(
                    path, info.inputs, rewrite, functools.partial(feeds, name)
                )
                yield name, precision, done, why
