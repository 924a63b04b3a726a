"""`styleship wrap` on graphs of the ONNX model zoo era, built here in that old form.

IR version 3, opset 7, experimental ops (ImageScaler, Crop, Affine, ...),
initializers listed again as graph inputs, and a batch dimension of 0 or a
symbol. ONNX Runtime runs such files directly; wrap must give the same pixels.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from styleship.runtime import image as im
from styleship.runtime.stylizer import Stylizer


def _old_model(batch: int | str, extra: list | None = None) -> onnx.ModelProto:
    """A small 0-255 BGR-free style net as a 2018 exporter wrote it."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.2, (3, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (3,)).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("ImageScaler", ["input1"], ["s"], scale=1 / 255, bias=[-0.4, -0.5, -0.6]),
        helper.make_node("Pad", ["s"], ["p"], mode="reflect", pads=[0, 0, 2, 3, 0, 0, 2, 3]),
        helper.make_node("Conv", ["p", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Crop", ["r1"], ["k"], border=[3, 2, 3, 2]),
        helper.make_node("Conv", ["k", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("ScaledTanh", ["c2"], ["t"], alpha=0.5, beta=2.0),
        helper.make_node("ParametricSoftplus", ["t"], ["sp"], alpha=1.5, beta=0.5),
        helper.make_node("Scale", ["sp"], ["sc"], scale=0.8),
        helper.make_node("Affine", ["sc"], ["output1"], alpha=255.0 / 3, beta=20.0),
        *(extra or []),
    ]
    shape = [batch, 3, "height", "width"]
    inputs = [helper.make_tensor_value_info("input1", TensorProto.FLOAT, shape)]
    inputs += [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, i.dims) for i in inits]
    out = nodes[-1].output[0]
    graph = helper.make_graph(
        nodes, "zoo", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], inits
    )
    return helper.make_model(
        graph, ir_version=3, opset_imports=[helper.make_opsetid("", 7)], producer_name="zoo"
    )


@pytest.mark.parametrize("batch", [0, "N"])
def test_an_old_zoo_graph_wraps_and_matches_ort_on_the_original(tmp_path, contents, batch):
    src = tmp_path / "zoo.onnx"
    onnx.save(_old_model(batch), str(src))
    out = tmp_path / "zoo.wrapped"
    proc = run_cli("wrap", src, "-o", out, "--input-range", "0-255", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["bundle"] == str(out)  # nothing else on stdout
    rgb = im.read_image(contents[1]).rgb[:48, :64]
    # ONNX Runtime runs the original file directly; with batch 0 it refuses a batch of
    # one, so the reference is the same graph with a symbolic batch.
    reference = tmp_path / "reference.onnx"
    onnx.save(_old_model("N"), str(reference))
    direct = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    expected = direct.run(None, {"input1": rgb.transpose(2, 0, 1)[None] * 255})[0][0] / 255
    with Stylizer(out, "ort-cpu", precision="fp32", cache_dir=None) as st:
        got = st.stylize(im.Image(rgb)).rgb
    assert np.abs(got - expected.transpose(1, 2, 0)).max() < 1e-5
    wrapped = onnx.load(str(out / "stylizer.onnx"))
    assert {n.op_type for n in wrapped.graph.node}.isdisjoint({"ImageScaler", "Crop", "Affine"})
    assert (out / "source.onnx").read_bytes() == src.read_bytes()  # the original, untouched


def test_what_cannot_be_wrapped_is_one_line(tmp_path):
    fill = helper.make_node("GivenTensorFill", ["output1"], ["filled"], shape=[1])
    src = tmp_path / "fill.onnx"
    onnx.save(_old_model("N", [fill]), str(src))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x03garbage" * 10)
    for path, message in (
        (src, "experimental op GivenTensorFill"),
        (junk, "not a valid ONNX model"),
    ):
        proc = run_cli("wrap", path, "-o", tmp_path / "out.wrapped")
        lines = proc.stderr.splitlines()
        assert proc.returncode == 1 and proc.stdout == "", proc.stdout
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not (tmp_path / "out.wrapped").exists()
