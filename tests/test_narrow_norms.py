"""Narrow instance norms (and the γ, β and activation after them) on an (N, C, H·W) view."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from styleship.export.narrow_norms import (  # noqa: E402
    flatten_narrow_norms,
    unflatten_narrow_norms,
)

RNG = np.random.default_rng(0)


def _run(model, feed: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options).run(None, feed)[0]


def _norm_stage(channels: int, gamma_rank: int = 4, activation: str | None = "Relu"):
    """x (N, C, H, W) and per-sample γ, β (N, C, 1, 1) -> InstanceNorm · γ + β [-> act]."""
    inits = [
        numpy_helper.from_array(np.ones(channels, np.float32), "unit"),
        numpy_helper.from_array(np.zeros(channels, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("InstanceNormalization", ["x", "unit", "zero"], ["n"], epsilon=1e-5),
        helper.make_node("Mul", ["n", "g"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["shifted" if activation else "y"]),
    ]
    if activation:
        nodes.append(helper.make_node(activation, ["shifted"], ["y"]))
    side = ["n", channels, 1, 1][-gamma_rank:] if gamma_rank else []
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, "h", "w"]),
        helper.make_tensor_value_info("g", TensorProto.FLOAT, side),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, side),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", channels, "h", "w"])
    graph = helper.make_graph(nodes, "norm", inputs, [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _feed(channels: int, gamma_rank: int = 4) -> dict:
    side = (2, channels, 1, 1)[-gamma_rank:] if gamma_rank else ()
    return {
        "x": RNG.normal(0, 2, (2, channels, 7, 5)).astype(np.float32),
        "g": RNG.normal(1, 0.5, side).astype(np.float32),
        "b": RNG.normal(0, 0.5, side).astype(np.float32),
    }


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", None])
def test_a_narrow_norm_runs_flat_and_gives_the_same_image(activation):
    model = _norm_stage(3, activation=activation)
    flat = copy.deepcopy(model)
    assert flatten_narrow_norms(flat) == 1
    onnx.checker.check_model(flat)
    assert Counter(n.op_type for n in flat.graph.node)["Reshape"] == 4  # x, γ, β in; y out
    feed = _feed(3)
    np.testing.assert_allclose(_run(flat, feed), _run(model, feed), atol=1e-5)
    assert _run(flat, feed).shape == (2, 3, 7, 5)


def test_shapes_recorded_for_the_chain_do_not_contradict_the_view():
    """An int8 graph records 4-D shapes for the norm's outputs; ONNX Runtime warned on every
    session that they disagreed with the 3-D view."""
    model = _norm_stage(3)
    for name in ("n", "scaled", "shifted"):
        model.graph.value_info.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 3, "h", "w"])
        )
    assert flatten_narrow_norms(model) == 1
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info}
    assert ranks["n"] == ranks["scaled"] == ranks["shifted"] == 3
    assert ranks["n/flat/x"] == 3


@pytest.mark.parametrize(
    ("channels", "gamma_rank"),
    [
        (32, 4),  # wide: OpenVINO's blocked layout already suits it
        (3, 1),  # γ of shape (C,) would not line up with an (N, C, H·W) view
        (3, 0),  # a scalar γ
    ],
)
def test_other_norms_are_left_alone(channels, gamma_rank):
    model = _norm_stage(channels, gamma_rank)
    before = model.SerializeToString()
    assert flatten_narrow_norms(model) == 0
    assert model.SerializeToString() == before


def test_the_magenta_bundle_runs_its_last_two_norms_flat_in_every_precision(magenta_bundle):
    """Magenta's 8- and 3-channel full-size stages; the split still has 4-D norms to read."""
    from styleship.runtime.bundle import Bundle

    bundle = Bundle.load(magenta_bundle)
    flat = bundle.manifest["narrow_norms"]["flattened"]
    assert flat["stylizer"] == flat["fused"] == {"fp32": 2, "int8": 2}
    assert "split" in bundle.manifest and bundle.manifest["split"]["levels"]


def test_the_split_gets_its_4d_norms_back_from_a_flat_graph():
    """split.upgrade may cut a graph shipped flat: expanding its norms undoes the view."""
    from styleship.export.norms import expand_instance_norms

    model = _norm_stage(8)
    original = model.SerializeToString()
    assert flatten_narrow_norms(model) == 1
    restored = copy.deepcopy(model)
    assert unflatten_narrow_norms(restored) == 1
    assert restored.SerializeToString() == original
    assert expand_instance_norms(model) == 1
    reduce_axes = [n for n in model.graph.node if n.op_type == "ReduceMean"]
    assert reduce_axes and all(n.input[0] != "n/flat/x" for n in model.graph.node)
    feed = _feed(8)
    np.testing.assert_allclose(
        _run(model, feed), _run(onnx.load_from_string(original), feed), atol=1e-5
    )
