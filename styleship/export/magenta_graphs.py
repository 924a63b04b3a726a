"""Graph surgery for the imported Magenta networks (DESIGN.md §3, reference/pretrained.md).

The source graphs were converted from TFLite (tf2onnx): NHWC, batch 1 and
384² declared, int8 QDQ. Here they become styleship graphs:
- NCHW RGB [0, 1] in and out, through wrap.adapter_nodes;
- batch, height and width symbolic: the only batch-1 constants are Reshape
  shapes with a leading 1, which become -1, and the declared sizes are
  cleared (the transform network is fully convolutional);
- the style predictor center-crops its input to a square and resizes it to
  256² inside the graph (Resize, linear with antialias: area-like when
  shrinking), as the TFLite release's preprocessing does;
- the code travels as a [batch, 100] tensor `style_code`.

`fused` holds the predictor once: style and content run through it as one
batch, and the code fed to the transform is α·P(style) + (1 − α)·P(content),
Magenta's strength (Ghiasi et al. 2017, §4). Torch-free: onnx and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from styleship.export.wrap import Convention, adapter_nodes

OPSET = 18  # the repository's opset; the source ops mean the same at 18 as at 15
IR_VERSION = 8
STYLE_SIDE = 256
CODE = "style_code"
NHWC_01 = Convention(input_range="0-1", layout="NHWC", channels="RGB")  # the TFLite graphs
IMAGE_DIMS = ["batch", 3, "height", "width"]


@dataclass
class Builder:
    """Nodes and initializers of a graph being assembled from pieces."""

    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def embed(self, model, prefix: str, content: str, image: str, *others: str) -> None:
        """Add a source model under `prefix`: its first input and its output adapted from
        `content` and to `image` (NCHW [0, 1]), its other inputs fed from `others`."""
        import onnx
        from onnx import helper

        g = onnx.compose.add_prefix(model, prefix).graph
        inits = {i.name for i in g.initializer}
        first, *rest = [i.name for i in g.input if i.name not in inits]
        adapter_inits, pre, post = adapter_nodes(NHWC_01, first, g.output[0].name, content, image)
        feeds = [helper.make_node("Identity", [src], [dst]) for src, dst in zip(others, rest)]
        self.nodes.extend([*pre, *feeds, *g.node, *post])
        self.inits.extend([*g.initializer, *adapter_inits])

    def model(self, inputs: list, outputs: list, name: str, opset: int = OPSET):
        from onnx import helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = IR_VERSION
        return model


def batch_free(model) -> None:
    """Make the batch symbolic in place: Reshape shapes [1, ...] become [-1, ...]."""
    from onnx import numpy_helper

    shapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    for i, init in enumerate(model.graph.initializer):
        if init.name in shapes:
            value = numpy_helper.to_array(init)
            if value.ndim == 1 and value.size > 1 and value[0] == 1:
                value = value.copy()
                value[0] = -1
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, init.name))
    del model.graph.value_info[:]
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param = "batch"


def spatial_free(model) -> None:
    """Clear the declared height and width of the NHWC image inputs and outputs."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[3].dim_value == 3:
            dims[1].dim_param, dims[2].dim_param = "height", "width"


def _square_256(b: Builder, x: str, tag: str) -> str:
    """Center-crop `x` (N×3×H×W) to a square and resize it to 256² (linear, antialiased)."""
    shape = b.op("Shape", [x], f"{tag}_shape")
    hw = b.op("Slice", [shape, b.const(f"{tag}_2", [2]), b.const(f"{tag}_4", [4])], f"{tag}_hw")
    side = b.op("ReduceMin", [hw], f"{tag}_side", keepdims=1)
    two = b.const(f"{tag}_two", np.array(2, np.int64))
    start = b.op("Div", [b.op("Sub", [hw, side], f"{tag}_spare"), two], f"{tag}_start")
    end = b.op("Add", [start, side], f"{tag}_end")
    crop = b.op("Slice", [x, start, end, b.const(f"{tag}_axes", [2, 3])], f"{tag}_crop")
    nc = b.op("Slice", [shape, b.const(f"{tag}_0", [0]), b.const(f"{tag}_2b", [2])], f"{tag}_nc")
    side_256 = b.const(f"{tag}_256", [STYLE_SIDE, STYLE_SIDE])
    sizes = b.op("Concat", [nc, side_256], f"{tag}_sizes", axis=0)
    return b.op(
        "Resize",
        [crop, "", "", sizes],
        f"{tag}_square",
        mode="linear",
        antialias=1,
        coordinate_transformation_mode="half_pixel",
    )


def _predict(b: Builder, predictor, square: str) -> str:
    """Run the predictor on N×3×256×256 `square`; returns the N×100 code."""
    b.embed(predictor, "predict/", square, "predict_nchw")
    return b.op("Reshape", ["predict_nchw", b.const("code_2d", [-1, 100])], CODE)


def _transform(b: Builder, transform, code: str) -> None:
    """The transform network from `content` and an N×100 `code` to `image`."""
    code_4d = b.op("Reshape", [code, b.const("code_4d", [-1, 1, 1, 100])], "code_nhwc")
    b.embed(transform, "transform/", "content", "image", code_4d)


def tensor(name: str, dims: list):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def style_encoder(predictor):
    b = Builder()
    _predict(b, predictor, _square_256(b, "style", "style"))
    return b.model(
        [tensor("style", ["batch", 3, "style_height", "style_width"])],
        [tensor(CODE, ["batch", 100])],
        "style_encoder",
    )


def stylizer(transform):
    b = Builder()
    _transform(b, transform, CODE)
    return b.model(
        [tensor("content", IMAGE_DIMS), tensor(CODE, ["batch", 100])],
        [tensor("image", IMAGE_DIMS)],
        "stylizer",
    )


def fused(predictor, transform):
    """content + style + strength -> image; the predictor runs once on both images."""
    b = Builder()
    both = b.op(
        "Concat",
        [_square_256(b, "style", "style"), _square_256(b, "content", "content")],
        "both_square",
        axis=0,
    )
    _predict(b, predictor, both)
    styled, own = f"{CODE}_style", f"{CODE}_content"
    b.op("Split", [CODE], styled, axis=0, num_outputs=2)
    b.nodes[-1].output.append(own)
    alpha = b.op("Reshape", ["strength", b.const("alpha_2d", [-1, 1])], "alpha_2d_value")
    toward = b.op("Sub", [styled, own], "code_toward_style")
    mixed = b.op(
        "Add", [own, b.op("Mul", [alpha, toward], "code_scaled")], "code_mixed"
    )  # (1 − α)·own + α·style
    _transform(b, transform, mixed)
    return b.model(
        [
            tensor("content", IMAGE_DIMS),
            tensor("style", ["batch", 3, "style_height", "style_width"]),
            tensor("strength", ["batch"]),
        ],
        [tensor("image", IMAGE_DIMS)],
        "fused",
    )


def multistyle(model) -> None:
    """Per-image style weights for multistyle26, in place: [26] becomes [batch, 26].

    The conditional instance norm forms γ = Σᵢ wᵢγᵢ as Unsqueeze(w, 1) · Γ then
    ReduceSum over axis 0 and Reshape to [1, C, 1, 1]; with a batch axis in
    front, the same steps use axes 2 and 1 and Reshape to [N, C, 1, 1].
    """
    from onnx import helper, numpy_helper

    g = model.graph
    weights = next(i for i in g.input if i.type.tensor_type.shape.dim[-1].dim_value == 26)
    users = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    consts = {
        "ms_axis2": np.array([2], np.int64),
        "ms_axis1": np.array([1], np.int64),
        "ms_shape": np.array([0, -1, 1, 1], np.int64),
    }
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    for unsqueeze in users[weights.name]:
        unsqueeze.input[1] = "ms_axis2"
        for mul in users[unsqueeze.output[0]]:
            for reduce in users[mul.output[0]]:
                reduce.input[1] = "ms_axis1"
                for reshape in users[reduce.output[0]]:
                    reshape.input[1] = "ms_shape"
    del g.value_info[:]
    weights.CopyFrom(helper.make_tensor_value_info(weights.name, 1, ["batch", 26]))
    image_in = next(i for i in g.input if i.name != weights.name)
    image_in.type.tensor_type.shape.dim[0].dim_param = "batch"
    g.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
