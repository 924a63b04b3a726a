"""The OpenVINO and torch backends against ONNX Runtime, and their refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from styleship.compare import psnr
from styleship.errors import BackendUnavailable, InputError, ModelError
from styleship.runtime import image as im
from styleship.runtime.backends import available_backends, create_backend
from styleship.runtime.bundle import Bundle


def _feeds(bundle: Bundle, contents, styles, size: int = 128) -> dict[str, np.ndarray]:
    """Stylizer-graph inputs from real photos: content at size², the code of a painting."""
    import cv2

    content = cv2.resize(im.read_image(contents[1]).rgb, (size, size))
    style = cv2.resize(im.read_image(styles[0]).rgb, (size, size))
    with create_backend("ort-cpu") as enc:
        enc.load(bundle, "style_encoder")
        code = enc.run({"style": im.to_nchw(style)})
    return {**code, "content": im.to_nchw(content), "alpha": np.ones(1, np.float32)}


def _run(name: str, bundle: Bundle, feeds, precision: str = "fp32", **options) -> np.ndarray:
    with create_backend(name, **options) as backend:
        backend.load(bundle, "stylizer", "cpu", precision)
        return backend.run(feeds)["image"]


@pytest.fixture(scope="module")
def bundle(small_bundle) -> Bundle:
    return Bundle.load(small_bundle)


@pytest.fixture(scope="module")
def feeds(bundle, contents, styles):
    return _feeds(bundle, contents, styles)


@pytest.fixture(scope="module")
def reference(bundle, feeds) -> np.ndarray:
    return _run("ort-cpu", bundle, feeds)


needs_openvino = pytest.mark.skipif(
    available_backends()["openvino"] is not None, reason="openvino is not installed"
)


@needs_openvino
def test_openvino_fp32_matches_onnxruntime(bundle, feeds, reference):
    out = _run("openvino", bundle, feeds)
    assert out.shape == reference.shape
    assert np.abs(out - reference).max() < 1e-4


@needs_openvino
def test_openvino_compiles_a_recurring_shape_for_that_shape(bundle, feeds, reference):
    """The third call at a shape runs a model reshaped to it (faster kernels, same output);
    at most `shape_cache` such models are kept; shapes seen once or twice (a folder of
    mixed sizes) run the dynamic model and never pay a compile."""
    with create_backend("openvino", shape_cache=1) as backend:
        backend.load(bundle, "stylizer", "cpu", "fp32")
        first = backend.run(feeds)["image"]
        backend.run(feeds)
        assert backend.info().details["static_shapes"] == []
        second = backend.run(feeds)["image"]
        static = backend.info().details["static_shapes"]
        assert [s["content"] for s in static] == [(1, 3, 128, 128)]
        assert np.abs(second - reference).max() < 1e-4 and np.abs(first - second).max() < 1e-4
        # The output is the caller's: a later call does not overwrite it.
        kept = second.copy()
        backend.run(feeds)
        assert np.array_equal(second, kept)
        small = {**feeds, "content": np.ascontiguousarray(feeds["content"][:, :, :64, :64])}
        backend.run(small)
        backend.run(small)
        backend.run(small)
        static = backend.info().details["static_shapes"]
        assert [s["content"] for s in static] == [(1, 3, 64, 64)]  # the older one dropped


@needs_openvino
def test_openvino_keeps_the_rewritten_model_and_a_later_load_skips_the_onnx(
    bundle, feeds, reference, tmp_path, monkeypatch
):
    """The first load writes the model as it rewrites it (IR, under the cache dir); later
    loads compile that and never read the ONNX file; a damaged entry is read past."""
    from styleship.runtime.backends.openvino import OpenVinoBackend

    monkeypatch.setenv("STYLESHIP_CACHE", str(tmp_path / "cache" / "styles"))
    with create_backend("openvino") as first:
        first.load(bundle, "stylizer", "cpu", "fp32")
        ir = first.info().details["ir_cache"]
        assert ir and str(tmp_path) in ir
    reads = []
    read = OpenVinoBackend._read
    monkeypatch.setattr(OpenVinoBackend, "_read", lambda self, p: reads.append(p) or read(self, p))
    out = _run("openvino", bundle, feeds)
    assert reads == [] and np.abs(out - reference).max() < 1e-4
    with open(ir, "w") as f:
        f.write("<net")  # cut short
    out = _run("openvino", bundle, feeds)
    assert [p.name for p in reads] == ["stylizer.onnx"] and np.abs(out - reference).max() < 1e-4
    # Every graph loads from its IR under the manifest's names, even an output that
    # OpenVINO knows by two (one behind an Identity, as the split graphs have).
    for graph in bundle.graphs:
        for _ in range(2):
            with create_backend("openvino") as engine:
                engine.load(bundle, graph, "cpu", "fp32")
    assert len(reads) == len(bundle.graphs)  # each read once: the stylizer above, the rest here


@needs_openvino
def test_openvino_reloaded_with_another_graph_keeps_nothing_of_the_last(
    bundle, feeds, reference, tmp_path, monkeypatch
):
    """A shape-specific compile after a second load reshapes the graph now loaded, even
    when that load came from the IR cache and read no ONNX."""
    monkeypatch.setenv("STYLESHIP_CACHE", str(tmp_path / "cache" / "styles"))
    _run("openvino", bundle, feeds)  # the stylizer's IR is kept
    with create_backend("openvino", shape_cache=1) as engine:
        engine.load(bundle, "style_encoder", "cpu", "fp32")
        engine.run({"style": feeds["content"]})  # and its model read from the ONNX
        engine.load(bundle, "stylizer", "cpu", "fp32")
        for _ in range(3):  # the third call compiles for the shape
            out = engine.run(feeds)["image"]
        assert engine.info().details["static_shapes"]
    assert np.abs(out - reference).max() < 1e-4


@needs_openvino
def test_openvino_bf16_is_close_but_not_identical(bundle, feeds, reference):
    try:
        out = _run("openvino", bundle, feeds, "bf16")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    quality = psnr(reference, out)
    assert 25.0 < quality < float("inf"), quality


@needs_openvino
def test_openvino_refuses_what_it_cannot_run(bundle, bundle_copy):
    with pytest.raises(BackendUnavailable, match="not fp16"):
        create_backend("openvino").load(bundle, "stylizer", "cpu", "fp16")
    with pytest.raises(BackendUnavailable, match="on the CPU"):
        create_backend("openvino").load(bundle, "stylizer", "cuda:0")
    with pytest.raises(InputError, match="hint"):
        create_backend("openvino", hint="fastest")
    # A graph whose I/O differs from the manifest: another graph's file in its place.
    shutil.copy(bundle_copy / "style_encoder.onnx", bundle_copy / "stylizer.onnx")
    with pytest.raises(ModelError, match="not this bundle's"):
        create_backend("openvino").load(Bundle.load(bundle_copy, verify=False), "stylizer")


def test_torch_backend_runs_the_bundled_checkpoint(bundle, feeds, reference):
    out = _run("torch", bundle, feeds)
    assert np.abs(out - reference).max() < 2e-3  # the export parity tolerance
    bf16 = _run("torch", bundle, feeds, "bf16")
    assert 20.0 < psnr(reference, bf16) < float("inf")


def test_torch_backend_compute_fn_matches_run(bundle, feeds):
    with create_backend("torch") as backend:
        backend.load(bundle, "stylizer")
        fn = backend.compute_fn(feeds)
        fn()  # runs on tensors made once; returns nothing to check but must not fail
        assert backend.info().backend == "torch"


def test_torch_backend_refusals(bundle, bundle_copy):
    with pytest.raises(BackendUnavailable, match="CUDA GPU"):
        create_backend("torch").load(bundle, "stylizer", "cpu", "tf32")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["checkpoint"]["name"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailable, match="carries no checkpoint"):
        create_backend("torch").load(Bundle.load(bundle_copy), "stylizer")


def test_exported_bundle_carries_its_checkpoint(bundle, small_checkpoint):
    assert bundle.checkpoint is not None
    assert (bundle.path / "checkpoint.safetensors").read_bytes() == small_checkpoint.read_bytes()
    assert "checkpoint.safetensors" in bundle.manifest["files"]  # hashed like the graphs


def test_onnxruntime_refuses_bf16(bundle):
    with pytest.raises(BackendUnavailable, match="ort-cpu runs fp32, fp16, int8, not bf16"):
        create_backend("ort-cpu").load(bundle, "stylizer", "cpu", "bf16")


def test_export_records_bf16_parity_and_the_stylizer_follows_it(bundle, bundle_copy):
    from styleship.runtime.stylizer import Stylizer

    record = bundle.manifest["precision_parity"]["bf16"]
    assert record["backend"] == "openvino"
    if "reason" not in record:  # measured: the record is what the comparison found
        assert record["passed"] == all(r["psnr_db"] >= 40.0 for r in record["results"])
        assert record["default"] == record["passed"]
    with Stylizer(bundle, "ort-cpu", precision="fp32", cache_dir=None) as st:
        assert st.precision == "fp32"
    if available_backends()["openvino"] is not None:
        return
    for passed in (True, False):
        manifest = json.loads((bundle_copy / "manifest.json").read_text())
        manifest["precision_parity"]["bf16"] |= {"passed": passed, "default": passed}
        (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
        with Stylizer(bundle_copy, "openvino", cache_dir=None) as st:
            timed = {m["precision"]: m["p50_ms"] for m in st.choice.measured}
            if passed and "openvino bf16" not in st.choice.skipped:  # a CPU with native bf16
                assert set(timed) == {"fp32", "bf16"}  # a new record: measured again
                assert st.precision == min(timed, key=timed.get)
            if not passed:
                assert "under the 40 dB bar" in st.choice.skipped["openvino bf16"]
                assert st.precision == "fp32"


@needs_openvino
def test_openvino_keeps_batches_on_the_dynamic_model(bundle, feeds):
    """A fixed batch of 8 crashed OpenVINO 2026.4's f32 compile: only batch 1 gets a
    shape-specific model."""
    batch = {k: np.ascontiguousarray(np.repeat(v, 8, axis=0)) for k, v in feeds.items()}
    with create_backend("openvino") as backend:
        backend.load(bundle, "stylizer", "cpu", "fp32")
        first = backend.run(batch)["image"]
        second = backend.run(batch)["image"]
        assert backend.info().details["static_shapes"] == []
        np.testing.assert_array_equal(first, second)
