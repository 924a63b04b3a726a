"""Quantise before padding: in an int8 graph, Pad → QuantizeLinear becomes QuantizeLinear → Pad.

ONNX Runtime's quantiser puts the QuantizeLinear of a convolution's input
just before the convolution, so where a network pads outside its
convolutions (Magenta's and the decoders' reflection padding, the edge
padding of the sub-pixel upsampling), the engine pads the float map and
then quantises the padded copy. At full size that float copy is the
largest buffer of the stage: OpenVINO's runtime graph of Magenta int8 at
1 MP holds a 32 MB padded float map before each 8-channel convolution.

Quantising is elementwise and reflect or edge padding only copies values,
so the order does not change a single value: Q(pad(x)) = pad(Q(x)). Padded
after quantising, the copy is of one byte a value. Constant padding is left
as it is (its value would need quantising too, and graphs folded back to
float by export/qdq.py would then pad a float map with an integer).

Every int8 file is rewritten and checked against its former self on a
probe and on the sample pictures (graph_index.rewrite_checked). Torch-free:
onnx and numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from styleship.export.graph_index import GraphIndex, drop_dead, rewrite_staged

if TYPE_CHECKING:
    from styleship.bundle.writer import BundleWriter

Log = Callable[[str], None]

COPYING_MODES = {b"reflect", b"edge"}


def quantize_before_pads(model) -> int:
    """Rewrite `model` in place: every reflect or edge Pad read only by a per-tensor
    QuantizeLinear runs after it, on the quantised map. The QuantizeLinear keeps its
    output's name and the nodes keep theirs. Returns how many pairs were swapped."""
    from onnx import helper

    graph = model.graph
    g = GraphIndex(graph)
    replace: dict[int, list] = {}
    gone: set[str] = set()
    for pad in graph.node:
        if pad.op_type != "Pad":
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        q = g.only_reader(pad.output[0], {"QuantizeLinear"})
        if mode not in COPYING_MODES or q is None or q.input[0] != pad.output[0]:
            continue
        scale = g.consts.get(q.input[1])
        if scale is None or scale.size != 1:  # per-axis quantisation of a padded map: rare
            continue
        gone.add(pad.output[0])
        quantized = f"{q.output[0]}/before_pad"
        attrs = {a.name: helper.get_attribute_value(a) for a in q.attribute}
        replace[id(pad)] = [
            helper.make_node(
                "QuantizeLinear", [pad.input[0], *q.input[1:]], [quantized], q.name, **attrs
            )
        ]
        replace[id(q)] = [
            helper.make_node("Pad", [quantized, *pad.input[1:]], [q.output[0]], pad.name, mode=mode)
        ]
    if replace:
        nodes = [m for n in graph.node for m in replace.get(id(n), [n])]
        del graph.node[:]
        graph.node.extend(nodes)
        drop_dead(graph)
        # The float padded maps are gone: so are the shapes recorded for them.
        for v in [v for v in graph.value_info if v.name in gone]:
            graph.value_info.remove(v)
    return len(replace) // 2


def quantize_bundle_pads(
    writer: BundleWriter, contents=(), styles=(), log: Log = lambda msg: None
) -> dict[str, dict]:
    """The `quantized_pads` export step: every staged int8 graph, in place; a file whose
    rewritten form does not compute the same outputs on a probe and on the sample pictures
    is left as it was. Returns the record: {"swapped": {graph: count}, "left": {graph:
    why}}."""
    done: dict[str, int] = {}
    left: dict[str, str] = {}
    swaps = rewrite_staged(writer, ("int8",), quantize_before_pads, contents, styles)
    for name, _, count, why in swaps:
        if why:
            log(f"{name} int8: pads left before the quantisers: {why}")
            left[name] = why
        elif count:
            done[name] = count
    if done:
        log(f"int8 pads after the quantisers: {', '.join(f'{g} {c}' for g, c in done.items())}")
    return {"swapped": done, "left": left}
