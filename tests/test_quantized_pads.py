"""int8 graphs pad the quantised map, not the float one (export/quantized_pads.py)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from styleship.export.quantized_pads import quantize_before_pads  # noqa: E402

RNG = np.random.default_rng(0)


def _run(model, feed: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options).run(None, feed)[0]


def _padded_conv(mode: str = "reflect", scale=0.02, second_reader: bool = False):
    """x → Relu → Pad(2) → Q → DQ → Conv 5×5 (int8 weights behind a DQ) → y, as ONNX
    Runtime's quantiser writes a convolution that pads outside itself."""
    c_in, c_out = 4, 6
    weights = RNG.integers(-127, 128, (c_out, c_in, 5, 5)).astype(np.int8)
    scales = np.asarray(scale, np.float32)
    inits = [
        numpy_helper.from_array(np.array([0, 0, 2, 2, 0, 0, 2, 2], np.int64), "pads"),
        numpy_helper.from_array(scales, "x_scale"),
        numpy_helper.from_array(np.full(scales.shape, 3, np.uint8), "x_zero"),
        numpy_helper.from_array(weights, "w_q"),
        numpy_helper.from_array(np.float32(0.01), "w_scale"),
        numpy_helper.from_array(np.int8(0), "w_zero"),
    ]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Pad", ["r", "pads"], ["p"], "pad", mode=mode),
        helper.make_node("QuantizeLinear", ["p", "x_scale", "x_zero"], ["p_q"], "quant", axis=1),
        helper.make_node("DequantizeLinear", ["p_q", "x_scale", "x_zero"], ["p_dq"], axis=1),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"]),
        helper.make_node("Conv", ["p_dq", "w"], ["y"], "conv", kernel_shape=[5, 5]),
    ]
    padded = [1, c_in, "hp", "wp"]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, "h", "w"])]
    if second_reader:
        nodes.append(helper.make_node("Identity", ["p"], ["p_too"]))
        outputs.append(helper.make_tensor_value_info("p_too", TensorProto.FLOAT, padded))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, "h", "w"])
    graph = helper.make_graph(nodes, "padded_conv", [x], outputs, inits)
    graph.value_info.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, padded))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_the_pad_runs_on_the_quantised_map_and_every_value_stays(mode):
    model = _padded_conv(mode)
    feed = {"x": RNG.normal(0, 2, (1, 4, 23, 17)).astype(np.float32)}
    before = _run(model, feed)
    assert quantize_before_pads(model) == 1
    onnx.checker.check_model(model)
    nodes = {n.name: n for n in model.graph.node}
    assert [n.op_type for n in model.graph.node][:3] == ["Relu", "QuantizeLinear", "Pad"]
    assert nodes["pad"].input[0] == nodes["quant"].output[0]  # the Pad reads uint8 now
    assert nodes["pad"].output[0] == "p_q"  # and writes what the dequantiser reads
    assert "p" not in {v.name for v in model.graph.value_info}
    np.testing.assert_array_equal(_run(model, feed), before)


@pytest.mark.parametrize(
    ("mode", "scale", "second_reader"),
    [
        ("constant", 0.02, False),  # its pad value would need quantising too
        ("reflect", [0.02, 0.03, 0.02, 0.01], False),  # per-channel scales
        ("reflect", 0.02, True),  # the float padded map is read elsewhere too
    ],
)
def test_other_pads_are_left_alone(mode, scale, second_reader):
    model = _padded_conv(mode, scale, second_reader)
    before = model.SerializeToString()
    assert quantize_before_pads(model) == 0
    assert model.SerializeToString() == before


def test_the_magenta_bundle_pads_its_int8_maps_after_quantising(magenta_bundle):
    """The imported network pads outside its convolutions (reflection, and the sub-pixel
    upsampling's edge pads): each of them now pads a quantised map."""
    from styleship.runtime.bundle import Bundle

    bundle = Bundle.load(magenta_bundle)
    swapped = bundle.manifest["quantized_pads"]["swapped"]
    assert swapped["stylizer"] == swapped["fused"] > 10
    model = onnx.load(str(bundle.path / bundle.graph("stylizer").files["int8"]))
    producers = {o: n for n in model.graph.node for o in n.output}
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    quantised = [p for p in pads if producers[p.input[0]].op_type == "QuantizeLinear"]
    assert len(quantised) == swapped["stylizer"]
    assert quantize_before_pads(model) == 0  # none left to swap
