"""Nearest ×2 upsampling into a 3×3 convolution, rewritten as a sub-pixel convolution.

The decoders here (Magenta's, the ST-VAE's, the VQ-VAE's) grow an image by
repeating every pixel 2×2 and convolving the result. The repeated map holds
four times the pixels of its source, is read once, and at the last stage is
the largest tensor of the whole network. But an output pixel of that
convolution sees only a 2×2 block of source pixels, with weights that depend
only on its place (its phase) in its own 2×2 block. So the same function is
one 3×3 convolution of the source with 4·C_out channels, one weight set per
phase (taps added where repeated pixels share a source pixel, zero elsewhere),
then DepthToSpace: the sub-pixel layout of Shi et al. 2016 ("Real-Time Single
Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional
Neural Network"). The multiply-adds are the same; the repeated map and its
padded copy are never made. Padding carries over: reflect padding of the
repeated map is edge padding of the source (its row -1 reflects to row 1,
a copy of source row 0), zero padding stays zero.

A nearest Resize by 1 (Magenta's last stage) is dropped here too: it only
copies the full-resolution map.

Torch-free: onnx and numpy. A graph whose rewritten form does not compute
the same outputs on a probe (ONNX Runtime) is left as it was (norms.py's
check, graph_index.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from styleship.export.graph_index import GraphIndex, drop_dead, rewrite_staged

if TYPE_CHECKING:
    from styleship.bundle.writer import BundleWriter

Log = Callable[[str], None]

# Source taps (0, 1, 2 = rows i-1, i, i+1 of the padded source) that each tap of the
# original 3×3 kernel lands on, per output phase: phase 0 reads repeated rows 2i-1, 2i,
# 2i+1 = source rows i-1, i, i; phase 1 reads 2i, 2i+1, 2i+2 = rows i, i, i+1.
PHASE_TAPS = {0: (0, 1, 1), 1: (1, 1, 2)}
# Resize settings under which output pixel 2i and 2i+1 both copy source pixel i.
NEAREST_X2 = {
    ("asymmetric", "floor"),
    ("asymmetric", "round_prefer_floor"),
    ("half_pixel", "round_prefer_floor"),
    ("half_pixel", "round_prefer_ceil"),
}
SOURCE_PAD = {"reflect": "edge", "edge": "edge", "constant": "constant"}
SUFFIX = "/subpixel"  # added to the names of the weights and bias a rewrite replaces


def phase_weights(w: np.ndarray) -> np.ndarray:
    """(C_out, C_in, 3, 3) weights of a conv on the repeated map -> (4·C_out, C_in, 3, 3)
    weights on its source, phases in DepthToSpace's DCR order (row phase, column phase)."""
    c_out = w.shape[0]
    out = np.zeros((4 * c_out, *w.shape[1:]), np.float64)
    for a, rows in PHASE_TAPS.items():
        for b, cols in PHASE_TAPS.items():
            block = out[(2 * a + b) * c_out : (2 * a + b + 1) * c_out]
            for dy, ty in enumerate(rows):
                for dx, tx in enumerate(cols):
                    block[:, :, ty, tx] += w[:, :, dy, dx]
    return out.astype(w.dtype)


def original_weights(phases: np.ndarray) -> np.ndarray:
    """The inverse of phase_weights: (4·C_out, C_in, 3, 3) -> the (C_out, C_in, 3, 3) weights
    of the convolution on the repeated map (for readers of a bundle's layers, such as the
    Magenta torch twin). Each corner tap is alone in one phase; the rest are sums."""
    p = phases.reshape(2, 2, -1, *phases.shape[1:]).astype(np.float64)
    w = np.zeros(p.shape[2:], np.float64)
    w[..., 0, 0], w[..., 0, 2] = p[0, 0, ..., 0, 0], p[0, 1, ..., 0, 2]
    w[..., 2, 0], w[..., 2, 2] = p[1, 0, ..., 2, 0], p[1, 1, ..., 2, 2]
    w[..., 0, 1] = p[0, 0, ..., 0, 1] - w[..., 0, 2]
    w[..., 1, 0] = p[0, 0, ..., 1, 0] - w[..., 2, 0]
    w[..., 1, 2] = p[1, 1, ..., 1, 2] - w[..., 0, 2]
    w[..., 2, 1] = p[1, 1, ..., 2, 1] - w[..., 2, 0]
    w[..., 1, 1] = p[0, 0, ..., 1, 1] - w[..., 1, 2] - w[..., 2, 1] - w[..., 2, 2]
    return w.astype(phases.dtype)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _nearest_x2(node, g: GraphIndex) -> bool:
    if node.op_type != "Resize" or len(node.input) < 3 or node.input[2] not in g.consts:
        return False
    attrs = _attrs(node)
    if attrs.get("mode", b"nearest") != b"nearest" or attrs.get("antialias", 0):
        return False
    transform = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
    rounding = attrs.get("nearest_mode", b"round_prefer_floor").decode()
    scales = g.consts[node.input[2]]
    return (transform, rounding) in NEAREST_X2 and scales.tolist() == [1, 1, 2, 2]


def _pad_of(pad, g: GraphIndex) -> str | None:
    """The source padding a 1-pixel spatial Pad of the repeated map becomes, or None."""
    if pad.op_type != "Pad" or len(pad.input) < 2 or pad.input[1] not in g.consts:
        return None
    if g.consts[pad.input[1]].tolist() != [0, 0, 1, 1, 0, 0, 1, 1]:
        return None
    if len(pad.input) > 2 and pad.input[2]:
        value = g.consts.get(pad.input[2])
        if value is None or np.any(value != 0):
            return None
    return SOURCE_PAD.get(_attrs(pad).get("mode", b"constant").decode())


def _plain_3x3(conv, g: GraphIndex, pads: list[int]) -> bool:
    if conv.op_type != "Conv" or conv.input[1] not in g.consts:
        return False
    attrs = _attrs(conv)
    return (
        g.consts[conv.input[1]].shape[2:] == (3, 3)
        and attrs.get("group", 1) == 1
        and list(attrs.get("strides", [1, 1])) == [1, 1]
        and list(attrs.get("dilations", [1, 1])) == [1, 1]
        and list(attrs.get("pads", [0, 0, 0, 0])) == pads
        and attrs.get("auto_pad", b"NOTSET") == b"NOTSET"
        and (len(conv.input) < 3 or not conv.input[2] or conv.input[2] in g.consts)
    )


def drop_identity_resizes(model) -> int:
    """Remove, in place, every nearest Resize by 1 (Magenta's last decoder stage resizes
    by 1, then convolves): a full-resolution copy that OpenVINO makes as written.
    Returns how many."""
    graph = model.graph
    g = GraphIndex(graph)
    dropped = []
    for n in graph.node:
        attrs = _attrs(n) if n.op_type == "Resize" else {}
        if (
            n.op_type != "Resize"
            or n.output[0] in g.outputs
            or attrs.get("mode", b"nearest") != b"nearest"
            or attrs.get("coordinate_transformation_mode") == b"tf_crop_and_resize"
            or len(n.input) < 3
            or n.input[2] not in g.consts
            or np.any(g.consts[n.input[2]] != 1)
            or (len(n.input) > 3 and n.input[3])
        ):
            continue
        for reader in g.consumers.get(n.output[0], []):
            for i, name in enumerate(reader.input):
                if name == n.output[0]:
                    reader.input[i] = n.input[0]
        dropped.append(n)
    for n in dropped:
        graph.node.remove(n)
    if dropped:
        drop_dead(graph)
    return len(dropped)


def subpixel_upsampling(model) -> int:
    """Rewrite `model` in place: every nearest ×2 Resize read only by a 3×3 convolution
    (through a 1-pixel reflect, edge or zero Pad, or the convolution's own zero pads)
    becomes a convolution of the source and a DepthToSpace. Returns how many."""
    from onnx import helper, numpy_helper

    graph = model.graph
    g = GraphIndex(graph)
    replace: dict[int, list] = {}  # id(node) -> the nodes standing in its place
    for resize in list(graph.node):
        if not _nearest_x2(resize, g):
            continue
        first = g.only_reader(resize.output[0])
        if first is None:
            continue
        mode = _pad_of(first, g)
        if mode is not None:
            conv = g.only_reader(first.output[0])
            if conv is None or not _plain_3x3(conv, g, [0, 0, 0, 0]):
                continue
        elif _plain_3x3(first, g, [1, 1, 1, 1]):
            conv, mode = first, "constant"
        else:
            continue
        t = f"{conv.output[0]}/subpixel"
        # Named after the weights they replace (+ SUFFIX): original_weights() gives those back.
        w_name = conv.input[1] + SUFFIX
        weights = numpy_helper.from_array(phase_weights(g.consts[conv.input[1]]), w_name)
        new = [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), f"{t}/pads")]
        new.append(weights)
        conv_inputs = [f"{t}/padded", w_name]
        if len(conv.input) > 2 and conv.input[2]:
            b_name = conv.input[2] + SUFFIX
            new.append(numpy_helper.from_array(np.tile(g.consts[conv.input[2]], 4), b_name))
            conv_inputs.append(b_name)
        graph.initializer.extend(new)
        replace[id(resize)] = [
            helper.make_node(
                "Pad", [resize.input[0], f"{t}/pads"], [f"{t}/padded"], f"{t}/pad", mode=mode
            )
        ]
        if conv is not first:
            replace[id(first)] = []
        replace[id(conv)] = [
            # The convolution keeps its name: int8 export picks layers by node name.
            helper.make_node(
                "Conv", conv_inputs, [f"{t}/phases"], conv.name or t, kernel_shape=[3, 3]
            ),
            helper.make_node(
                "DepthToSpace",
                [f"{t}/phases"],
                [conv.output[0]],
                f"{t}/depth_to_space",
                blocksize=2,
                mode="DCR",
            ),
        ]
    if replace:
        nodes = [m for n in graph.node for m in replace.get(id(n), [n])]
        del graph.node[:]
        graph.node.extend(nodes)
        drop_dead(graph)
    return len([n for n in replace.values() if len(n) == 2])


def _upsampling(model) -> dict[str, int]:
    """Both rewrites of the step, in place: {rewrite: count}, empty where neither matched."""
    counts = {
        "subpixel": subpixel_upsampling(model),
        "identity_resizes": drop_identity_resizes(model),
    }
    return counts if any(counts.values()) else {}


def subpixel_bundle(
    writer: BundleWriter, contents=(), styles=(), log: Log = lambda msg: None
) -> dict[str, dict]:
    """The `upsampling` export step: in every staged fp32 graph, make the ×2 upsampling
    convolutions sub-pixel and drop resizes by 1, in place, before parity checks the
    graphs against the source. A graph whose rewritten form does not compute the same
    outputs on a probe and on the sample pictures (`contents`, `styles`) is left as it
    was. Returns the record: {"rewritten": {graph: {rewrite: count}}, "left": {graph:
    why}}."""
    done, left = {}, {}
    for name, _, counts, why in rewrite_staged(writer, ("fp32",), _upsampling, contents, styles):
        if why:
            log(f"{name}: upsampling left as it was: {why}")
            left[name] = why
        elif counts:
            done[name] = counts
    if done:
        log(f"upsampling rewritten: {', '.join(f'{g} {c}' for g, c in done.items())}")
    return {"rewritten": done, "left": left}
