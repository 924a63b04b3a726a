"""Export: the bundle's contents, ONNX validity, parity with PyTorch, atomicity."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from styleship._hashing import sha256_file  # noqa: E402
from styleship.errors import ExportError, InputError  # noqa: E402
from styleship.export import onnx as exporter  # noqa: E402
from styleship.models.checkpoint import load_checkpoint  # noqa: E402
from styleship.runtime.bundle import Bundle  # noqa: E402


def test_bundle_layout_and_manifest(small_bundle):
    m = json.loads((small_bundle / "manifest.json").read_text())
    assert m["format"] == "styleship-bundle" and m["family"] == "stvae"
    assert m["opset"] == exporter.OPSET >= 17
    main = {g for g in m["graphs"] if not g.startswith("split_")}
    assert main == {"style_encoder", "stylizer", "fused"}
    assert m["split"]["exact"]  # the exact-tiling graphs: tests/test_exact_tiling.py
    for name, digest in m["files"].items():
        assert sha256_file(small_bundle / name) == digest
    assert m["weights"]["untrained"] and m["weights"]["vgg"]["source"] == "random"
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    parity = m["parity"]
    assert parity["passed"] and {r["size"] for r in parity["results"]} == {256, 384}
    assert all(r["batch"] == 2 and r["max_abs"] < 1e-3 for r in parity["results"])
    assert m["style_code"] == {"style_mu": "linear", "style_sigma": "rms", "style_matrix": "linear"}


def test_graphs_are_valid_onnx_with_named_dynamic_axes(small_bundle):
    for graph in ("style_encoder", "stylizer", "fused"):
        model = onnx.load(str(small_bundle / f"{graph}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == exporter.OPSET
        dims = {
            i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input
        }
        if "content" in dims:
            assert dims["content"] == ["batch", 3, "height", "width"]
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniformLike"}
        props = {p.key: p.value for p in model.metadata_props}
        assert props["styleship.graph"] == graph and props["styleship.family"] == "stvae"


@pytest.mark.parametrize("size", [(64, 96), (136, 80)])
def test_onnx_runtime_matches_pytorch_batch_2(
    small_bundle, small_checkpoint, contents, styles, size
):
    """Independent of the manifest's record: ORT vs torch on real photos, batch 2, two sizes."""
    import cv2

    from styleship.runtime.image import read_image

    def load(paths, hw):
        return np.stack([cv2.resize(read_image(p).rgb, hw[::-1]).transpose(2, 0, 1) for p in paths])

    content, style = load(contents[:2], size), load(styles[:2], (72, 64))
    alpha = np.array([1.0, 0.4], np.float32)
    model, _ = load_checkpoint(small_checkpoint)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(a) for a in (content, style, alpha))).numpy()
    sess = ort.InferenceSession(
        str(small_bundle / "fused.onnx"), providers=["CPUExecutionProvider"]
    )
    out = sess.run(["image"], {"content": content, "style": style, "alpha": alpha})[0]
    assert out.shape == (2, 3, *size)
    assert ref.std() > 0.01  # a non-degenerate image, so the comparison means something
    assert np.abs(out - ref).max() < 1e-4


def test_existing_bundle_is_not_replaced_without_force(small_checkpoint, small_bundle):
    before = sha256_file(small_bundle / "manifest.json")
    with pytest.raises(InputError, match="already exists"):
        exporter.export_bundle(small_checkpoint, small_bundle)
    assert sha256_file(small_bundle / "manifest.json") == before


def test_failed_parity_leaves_existing_bundle_intact(small_checkpoint, bundle_copy, monkeypatch):
    """A real parity failure (tolerance below any float error) aborts the export cleanly."""
    before = {p.name: sha256_file(p) for p in bundle_copy.iterdir()}
    monkeypatch.setattr(exporter, "IMAGE_ATOL", -1.0)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        exporter.export_bundle(small_checkpoint, bundle_copy, force=True)
    assert {p.name: sha256_file(p) for p in bundle_copy.iterdir()} == before
    assert [p.name for p in bundle_copy.parent.iterdir()] == [bundle_copy.name]  # no staging left
    Bundle.load(bundle_copy)
