"""Cut a stylizer graph at its whole-image statistics (docs/tiling.md, "Exact tiling").

A feed-forward stylizer is local everywhere except where it reduces over the
whole image: instance norms (spatial mean and variance per channel), the
ST-VAE's content mean and the Gram matrix its `cnet` takes over all positions.
This module finds those reductions in the ONNX graph itself, so it needs no
knowledge of the family and works for exported and imported graphs alike:

- `GlobalAveragePool(x)` and `ReduceMean(x, axes=H,W)` are the **mean** of x;
- such a mean of `(y − mean(y))²` (Mul or Pow) is the **variance** of y;
- `MatMul(r, Transpose(r)) / n`, r = Reshape(x) to (B, C, H·W), is the **Gram** of x;
- an `InstanceNormalization` node (export/norms.py fuses the first two into
  one) is written back out as the first two before the graph is cut.

Each reduction's output becomes a graph input. Statistics are grouped into
levels: a level's sources depend only on statistics of earlier levels. One
graph per level computes its sources (the tensors to reduce) from the content
tile and the statistics known so far; a last graph computes the image from the
tile and every statistic. Graphs are pruned to what their outputs need.
Torch-free: onnx only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from styleship.export.graph_index import GraphIndex, needed_nodes, spatial_mean, through_shape_ops
from styleship.export.norms import expand_instance_norms


@dataclass
class Stat:
    """One whole-image statistic: the tensor it replaces and what it reduces."""

    tensor: str  # the reduction's output in the source graph; becomes input `name`
    kind: str  # "mean" | "var" | "gram"
    source: str  # the 4-D NCHW tensor it is a statistic of
    rank: int = 4  # of the replaced tensor: 4 (keepdims), 2 (B, C) or 3 (Gram: B, C, C)
    name: str = ""  # graph input name: stat_<i>
    level: int = 0


@dataclass
class Split:
    """The statistics of a graph and the graphs that compute them level by level."""

    stats: list[Stat]
    levels: list  # ModelProto per level: (content, code..., stats of earlier levels) -> features
    stylize: object  # ModelProto: (content, code..., all stats) -> the original outputs
    features: dict[str, str] = field(default_factory=dict)  # source tensor -> output name
    source: object = None  # ModelProto whose tensors `stats` and `features` name (norms expanded)


def find_stats(model) -> list[Stat]:
    """The whole-image reductions of `model`, in graph order."""
    g = model.graph
    index = GraphIndex(g)
    consts, producer, consumers = index.consts, index.producer, index.consumers
    stats: list[Stat] = []
    mean_of: dict[str, str] = {}  # mean tensor -> its source
    for n in g.node:
        if spatial_mean(n, consts):
            keep = next((a.i for a in n.attribute if a.name == "keepdims"), 1)
            stats.append(Stat(n.output[0], "mean", n.input[0], 4 if keep else 2))
            mean_of[n.output[0]] = n.input[0]
        elif n.op_type == "MatMul":
            a, b = n.input
            t = producer.get(b)
            r = producer.get(a)
            if not (t is not None and t.op_type == "Transpose" and t.input[0] == a):
                continue
            if r is None or r.op_type != "Reshape":
                continue
            divs = [c for c in consumers.get(n.output[0], []) if c.op_type == "Div"]
            if len(divs) == 1 and len(consumers[n.output[0]]) == 1:
                stats.append(Stat(divs[0].output[0], "gram", r.input[0], 3))
    for s in stats:  # a mean of (y − mean(y))² is the variance of y
        if s.kind != "mean" or s.source not in producer:
            continue
        sq = producer[s.source]
        squared = sq.op_type == "Mul" and sq.input[0] == sq.input[1]
        squared |= sq.op_type == "Pow" and consts.get(sq.input[1], np.array(0)).item() == 2
        if not squared:
            continue
        sub = producer.get(sq.input[0])
        if sub is None or sub.op_type != "Sub":
            continue
        y, m = sub.input[0], through_shape_ops(sub.input[1], producer)
        if mean_of.get(m) == y:
            s.kind, s.source = "var", y
    for i, s in enumerate(stats):
        s.name = f"stat_{i}"
    return stats


def _value(name: str, rank: int):
    """A float tensor declaration of known rank and symbolic sizes."""
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(
        name, TensorProto.FLOAT, [f"{name}_d{k}" for k in range(rank)]
    )


def _subgraph(model, nodes: list, outputs: list, name: str, stat_inputs: list):
    """A model of `nodes` pruned to `outputs`; inputs: the graph's and stats it uses."""
    import onnx
    from onnx import helper

    keep = needed_nodes(nodes, {o.name for o in outputs})
    used = {i for n in keep for i in n.input}
    g = model.graph
    inputs = [i for i in g.input if i.name in used]
    inputs += stat_inputs
    inputs = [i for i in inputs if i.name in used]
    inits = [i for i in g.initializer if i.name in used]
    graph = helper.make_graph(keep, name, inputs, outputs, inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return out


def _used(stats: list[Stat], nodes: list, outputs: set[str]) -> list[Stat]:
    """The statistics the outputs need, directly or through other statistics' sources
    (a mean that only fed a variance's (y − mean)² is no longer needed once fed)."""
    by_name = {s.name: s for s in stats}
    used: set[str] = set()
    targets = set(outputs)
    while True:
        refs = {i for n in needed_nodes(nodes, targets) for i in n.input} & set(by_name)
        new = refs - used
        if not new:
            return [s for s in stats if s.name in used]
        used |= new
        targets |= {by_name[n].source for n in new}


def split(model) -> Split | None:
    """The split of `model` (None when it has no whole-image statistic)."""
    import copy

    from onnx import helper

    model = copy.deepcopy(model)
    expand_instance_norms(model)  # a fused norm's mean and variance become cuttable tensors
    stats = find_stats(model)
    if not stats:
        return None
    g = model.graph
    renamed = {s.tensor: s.name for s in stats}
    replaced = set(renamed)
    nodes = []
    for n in g.node:
        if replaced.intersection(n.output):
            continue  # its output is now fed
        if renamed.keys() & set(n.input):  # rewired on a copy: `model` stays whole for probes
            n = copy.deepcopy(n)
            n.input[:] = [renamed.get(i, i) for i in n.input]
        nodes.append(n)
    for o in g.output:
        if o.name in renamed:
            raise ValueError(f"graph output {o.name} is itself a whole-image statistic")
    stats = _used(stats, nodes, {o.name for o in g.output})
    # Levels: a statistic's level is one more than the highest level its source needs.
    deps: dict[str, set[str]] = {s.name: {s.name} for s in stats}
    for n in nodes:
        found = set().union(*(deps.get(i, set()) for i in n.input))
        for o in n.output:
            deps[o] = found
    level: dict[str, int] = {}
    for s in stats:
        s.level = 1 + max((level.get(d, -1) for d in deps.get(s.source, ())), default=-1)
        level[s.name] = s.level
    ranks = {lv: i for i, lv in enumerate(sorted(set(level.values())))}
    for s in stats:
        s.level = level[s.name] = ranks[s.level]
    features: dict[str, str] = {}
    level_models = []
    for lv in range(max(level.values()) + 1):
        sources = list(dict.fromkeys(s.source for s in stats if s.level == lv))
        ids = []
        for src in sources:
            features[src] = f"feature_{len(features)}"
            ids.append(helper.make_node("Identity", [src], [features[src]]))
        outs = [_value(features[s], 4) for s in sources]
        earlier = [_value(s.name, s.rank) for s in stats if s.level < lv]
        level_models.append(_subgraph(model, nodes + ids, outs, f"split_stats_{lv}", earlier))
    every = [_value(s.name, s.rank) for s in stats]
    final = _subgraph(model, nodes, list(g.output), "split_stylize", every)
    return Split(stats, level_models, final, features, model)
