"""`styleship wrap`: any single-input image-to-image ONNX model as a styleship bundle.

Many models were exported by someone else with their own conventions, such
as a fast-neural-style network that takes BGR pixels in 0–255. `wrap` puts
adapter nodes around the foreign graph:
- in front: [0, 1] RGB NCHW becomes the model's channel order, range and
  layout;
- behind: the model's output goes back to [0, 1] RGB NCHW.

The result is a bundle with a single `stylizer` graph and no style code,
because the style is built into the weights. `stylize`, `bench`, `serve` and
`build` read it like any other bundle. The adapters are plain Mul, Add,
Gather and Transpose nodes in the model's own opset, so the graph stays one
graph that TensorRT and ONNX Runtime can fuse.

A graph is accepted only if it has exactly one 4-D float32 image input and
exactly one 4-D float32 image output, with 3 channels where the layout puts
them. Fixed spatial sizes are recorded, and the runtime then resizes content
to that size and the result back. Torch-free: onnx and onnxruntime only.

Graphs from the ONNX model zoo era (IR version 3, opsets 1-9) are normalised
first (`_normalise`): their experimental ops (ImageScaler, Affine, Crop, ...)
become the standard ops they are defined as, initializers stop being listed
as graph inputs (IR 4), and a batch dimension of 0 becomes dynamic. The
opset itself is kept: onnx.version_converter has no adapter for the
experimental ops (they were dropped in opset 10), while every standard op
this needs exists in opset 7, so the rewrite is exact and the rest of the
graph stays as its author exported it.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from styleship._hashing import sha256_file
from styleship.bundle import writer
from styleship.bundle.manifest import Manifest, TensorSpec
from styleship.errors import InputError
from styleship.export.steps import Plan, run_steps
from styleship.runtime import image as im
from styleship.runtime.bundle import Bundle

FAMILY = "wrapped"
RANGES = {"0-1": (0.0, 1.0), "0-255": (0.0, 255.0), "-1-1": (-1.0, 1.0)}
# Ops onnx's checker knows as experimental (no schema; it only prints a warning on stdout).
EXPERIMENTAL = (
    "ATen",
    "Affine",
    "ConstantFill",
    "Crop",
    "DynamicSlice",
    "GRUUnit",
    "GivenTensorFill",
    "ImageScaler",
    "ParametricSoftplus",
    "Scale",
    "ScaledTanh",
)
INT64_MAX = 2**63 - 1


def _one_line(exc: Exception) -> str:
    """An onnx/ORT message (often several lines, with the node's details) as one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class Convention:
    """How the foreign model wants its pixels."""

    input_range: str = "0-255"
    output_range: str | None = None  # None: the same as the input
    layout: str = "NCHW"
    channels: str = "RGB"

    def check(self) -> None:
        for r in (self.input_range, self.output_range or self.input_range):
            if r not in RANGES:
                raise InputError(f"range must be one of {', '.join(RANGES)}, not {r!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        if self.channels not in ("RGB", "BGR"):
            raise InputError(f"channels must be RGB or BGR, not {self.channels!r}")


def _dims(value_info) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _standard_nodes(node, const) -> list:
    """The standard-op equivalent of one experimental node (ORT's definitions), or []."""
    from onnx import helper

    a, (x,), (y,) = _attrs(node), node.input, node.output
    tmp = f"{y}_std"
    if node.op_type == "ImageScaler":  # y = scale * x + bias[c]
        bias = np.asarray(a.get("bias", [0.0]), np.float32).reshape(1, -1, 1, 1)
        return [
            helper.make_node("Mul", [x, const(a.get("scale", 1.0))], [tmp]),
            helper.make_node("Add", [tmp, const(bias)], [y]),
        ]
    if node.op_type == "Affine":  # y = alpha * x + beta
        return [
            helper.make_node("Mul", [x, const(a.get("alpha", 1.0))], [tmp]),
            helper.make_node("Add", [tmp, const(a.get("beta", 0.0))], [y]),
        ]
    if node.op_type == "Scale":
        return [helper.make_node("Mul", [x, const(a.get("scale", 1.0))], [y])]
    if node.op_type in ("ScaledTanh", "ParametricSoftplus"):  # alpha * f(beta * x)
        f = "Tanh" if node.op_type == "ScaledTanh" else "Softplus"
        return [
            helper.make_node("Mul", [x, const(a.get("beta", 1.0))], [f"{tmp}_in"]),
            helper.make_node(f, [f"{tmp}_in"], [tmp]),
            helper.make_node("Mul", [tmp, const(a.get("alpha", 1.0))], [y]),
        ]
    if node.op_type == "Crop":  # NCHW; border = left, top, right, bottom; scale = height, width
        border = list(a.get("border", [0, 0, 0, 0]))
        if len(border) != 4:
            raise InputError(f"Crop node {node.name!r} has {len(border)} border values, not 4")
        left, top, right, bottom = border
        if "scale" in a:
            ends = [top + a["scale"][0], left + a["scale"][1]]
        else:
            ends = [-bottom if bottom else INT64_MAX, -right if right else INT64_MAX]
        return [helper.make_node("Slice", [x], [y], axes=[2, 3], starts=[top, left], ends=ends)]
    return []


def _normalise(model) -> None:
    """Bring an old graph to what the checker, the adapters and the backends take, in place.

    See the module docstring; anything left that cannot be rewritten is one InputError.
    """
    from onnx import numpy_helper

    g = model.graph
    consts: list = []

    def const(value) -> str:
        name = f"wrap_std_{len(consts)}"
        consts.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    nodes = []
    for node in g.node:
        if node.op_type in EXPERIMENTAL and node.domain in ("", "ai.onnx"):
            std = _standard_nodes(node, const)
            if not std:
                raise InputError(
                    f"the model uses the experimental op {node.op_type}, which wrap cannot "
                    "rewrite into standard ONNX ops"
                )
            nodes += std
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(consts)
    # IR 3 lists every initializer as a graph input too; from IR 4 on they need not be,
    # and ORT only constant-folds initializers that are not overridable inputs.
    inits = {i.name for i in g.initializer}
    kept = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(kept)
    model.ir_version = max(model.ir_version, 4)
    # A batch of 0 (an old exporter's "any") is dynamic: clear it to an unknown dimension.
    for vi in (*g.input, *g.output, *g.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value == 0:
                d.ClearField("dim_value")


def _image_io(model, conv: Convention) -> tuple[object, object, list]:
    """The one image input and output, or an InputError that says what is wrong."""
    from onnx import TensorProto

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(
            f"wrap takes a model with one image input and one image output; this one has "
            f"{len(inputs)} input(s) and {len(outputs)} output(s)"
        )
    c_axis = 1 if conv.layout == "NCHW" else 3
    for role, vi in (("input", inputs[0]), ("output", outputs[0])):
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise InputError(f"the model's {role} {vi.name!r} is not float32")
        dims = _dims(vi)
        if len(dims) != 4:
            raise InputError(f"the model's {role} {vi.name!r} has rank {len(dims)}, not 4")
        if isinstance(dims[c_axis], int) and dims[c_axis] != 3:
            raise InputError(
                f"the model's {role} {vi.name!r} has {dims[c_axis]} channels at axis {c_axis} "
                f"({conv.layout}); an image has 3 (is the layout right?)"
            )
    dims = _dims(inputs[0])
    spatial = dims[2:4] if conv.layout == "NCHW" else dims[1:3]
    fixed = [d for d in spatial if isinstance(d, int) and d > 0]
    return inputs[0], outputs[0], fixed if len(fixed) == 2 else []


def adapter_nodes(
    conv: Convention, src_in: str, src_out: str, content: str = "content", image: str = "image"
) -> tuple[list, list, list]:
    """(initializers, nodes in front, nodes behind) converting between the runtime's [0, 1]
    RGB NCHW tensors (`content`, `image`) and a model's `src_in`/`src_out` convention.

    Range steps that are the identity (a 0-1 model) are left out. Names are prefixed
    with `src_in` so adapters for several inputs can live in one graph.
    """
    from onnx import helper, numpy_helper

    lo_in, hi_in = RANGES[conv.input_range]
    lo_out, hi_out = RANGES[conv.output_range or conv.input_range]
    p = f"wrap_{src_in}"
    consts = {
        f"{p}_bgr": np.array([2, 1, 0], np.int64),
        f"{p}_in_scale": np.array(hi_in - lo_in, np.float32),
        f"{p}_in_shift": np.array(lo_in, np.float32),
        f"{p}_out_scale": np.array(1.0 / (hi_out - lo_out), np.float32),
        f"{p}_out_shift": np.array(-lo_out, np.float32),
    }
    pre, post = [], []

    def step(nodes: list, op: str, x: str, arg: str | None, out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, [x, arg] if arg else [x], [out], **attrs))
        return out

    x = content
    if conv.channels == "BGR":
        x = step(pre, "Gather", x, f"{p}_bgr", f"{p}_bgr_in", axis=1)
    if hi_in - lo_in != 1.0:
        x = step(pre, "Mul", x, f"{p}_in_scale", f"{p}_scaled_in")
    if lo_in != 0.0:
        x = step(pre, "Add", x, f"{p}_in_shift", f"{p}_ranged_in")
    if conv.layout == "NHWC":
        x = step(pre, "Transpose", x, None, f"{p}_nhwc_in", perm=[0, 2, 3, 1])
    pre.append(helper.make_node("Identity", [x], [src_in]))
    y = src_out
    if conv.layout == "NHWC":
        y = step(post, "Transpose", y, None, f"{p}_nchw_out", perm=[0, 3, 1, 2])
    if conv.channels == "BGR":
        y = step(post, "Gather", y, f"{p}_bgr", f"{p}_rgb_out", axis=1)
    if lo_out != 0.0:
        y = step(post, "Add", y, f"{p}_out_shift", f"{p}_shifted_out")
    if hi_out - lo_out != 1.0:
        y = step(post, "Mul", y, f"{p}_out_scale", f"{p}_ranged_out")
    post.append(helper.make_node("Identity", [y], [image]))
    used = {i for n in (*pre, *post) for i in n.input}
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items() if k in used]
    return inits, pre, post


def _adapt(model, conv: Convention, src_in: str, src_out: str) -> None:
    """Rewire `model` in place: `content` -> adapters -> model -> adapters -> `image`."""
    from onnx import TensorProto, helper

    g = model.graph
    inits, pre, post = adapter_nodes(conv, src_in, src_out)
    g.initializer.extend(inits)
    nodes = [*pre, *g.node, *post]
    del g.node[:]
    g.node.extend(nodes)
    dims = ["batch", 3, "height", "width"]
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("content", TensorProto.FLOAT, dims))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("image", TensorProto.FLOAT, dims))


def _probe_size(fixed: list[int]) -> tuple[int, int]:
    return (fixed[0], fixed[1]) if fixed else (64, 96)


def wrap_model(
    onnx_path: str | Path,
    out_dir: str | Path,
    conv: Convention,
    description: str = "",
    force: bool = False,
) -> Path:
    """Write a bundle around `onnx_path`; returns the bundle path."""
    import onnx

    conv.check()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"no such ONNX file: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf's DecodeError and others
        raise InputError(f"{onnx_path} is not a valid ONNX model: {_one_line(exc)}") from None
    _normalise(model)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError and others
        raise InputError(f"{onnx_path} is not a valid ONNX model: {_one_line(exc)}") from None
    src_in, src_out, fixed = _image_io(model, conv)
    _adapt(model, conv, src_in.name, src_out.name)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InputError(f"the adapters do not fit {onnx_path}: {_one_line(exc)}") from None
    out_dir = Path(out_dir)
    tensor = ("batch", 3, "height", "width")
    manifest = Manifest(
        name=out_dir.name,
        family=FAMILY,
        description=description or f"{onnx_path.name}, wrapped by styleship",
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        normalisation={
            "input": "RGB float32 NCHW in [0, 1]; adapters inside the graph convert it",
            "output": "RGB float32 NCHW in [0, 1]",
            "size_multiple": im.MULTIPLE,
            "min_side": im.MIN_SIDE,
            **({"fixed_size": fixed} if fixed else {}),
        },
        opset=max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None
        ),
        exporter="styleship wrap",
        weights={"source": "wrapped ONNX model", "file": onnx_path.name},
        records={
            "wrapped": {
                "source": "source.onnx",
                "source_sha256": sha256_file(onnx_path),
                "input": {
                    "name": src_in.name,
                    "range": conv.input_range,
                    "layout": conv.layout,
                    "channels": conv.channels,
                },
                "output": {"name": src_out.name, "range": conv.output_range or conv.input_range},
            }
        },
    )
    plan = Plan(parity=lambda bundle, log: _probe(bundle, fixed), precision_parity=False)
    with writer.create(out_dir, manifest, force) as staged:
        staged.add_graph(
            "stylizer",
            model,
            [TensorSpec("content", tensor, "content")],
            [TensorSpec("image", tensor, "image")],
        )
        # The original, for reference: kept byte for byte, so it is no graph of the bundle.
        shutil.copyfile(onnx_path, staged.stage / "source.onnx")
        run_steps(staged, plan)
    return out_dir


def _probe(bundle: Bundle, fixed: list[int]) -> dict:
    """The steps' parity check for a wrapped model: it runs, and keeps the image's shape."""
    import onnxruntime as ort

    h, w = _probe_size(fixed)
    probe = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    try:
        session = ort.InferenceSession(
            str(bundle.graph_file("stylizer")), providers=["CPUExecutionProvider"]
        )
        (result,) = session.run(["image"], {"content": probe})
    except Exception as exc:  # ORT's errors name the failing node
        raise InputError(
            f"the wrapped model does not run on a {w}×{h} image: {_one_line(exc)}"
        ) from None
    if result.shape != probe.shape:
        raise InputError(
            f"the model maps a {w}×{h} image to shape {list(result.shape)} (after the "
            f"adapters); wrap needs an output of the input's size"
        )
    return {"backend": "ort-cpu", "probe": [h, w], "shape_kept": True, "passed": True}
