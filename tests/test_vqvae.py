"""The VQ-VAE family: quantiser behaviour, export parity (codes included), runtime."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from styleship.errors import InputError  # noqa: E402
from styleship.models.checkpoint import load_checkpoint  # noqa: E402
from styleship.models.quantizer import VectorQuantizer  # noqa: E402
from styleship.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _as_map(flat):
    """(N, D) -> (1, D, 1, N): the quantiser's (B, D, H, W) layout."""
    return flat.t().reshape(1, flat.shape[1], 1, -1)


def test_normalised_argmax_is_the_nearest_neighbour():
    q = VectorQuantizer(num_codes=512, dim=64)
    q.codebook.copy_(_unit(512, 64, seed=1))
    z = _unit(4096, 64, seed=2)
    assert torch.equal(q.nearest(z), torch.cdist(z, q.codebook).argmin(dim=1))


def test_ema_update_moves_codes_toward_their_assignments():
    q = VectorQuantizer(num_codes=8, dim=4, decay=0.9).train()
    q.initialised.fill_(True)
    q.codebook.copy_(_unit(8, 4, seed=3))
    q.ema_sum.copy_(q.codebook * 2.0)
    q.ema_count.fill_(2.0)
    target = F.normalize(q.codebook[0] + 0.3 * _unit(4, seed=4), dim=0)
    batch = F.normalize(
        target + 0.01 * torch.randn(64, 4, generator=torch.Generator().manual_seed(5)), dim=1
    )
    assert (q.nearest(batch) == 0).all()  # all assigned to code 0
    before = float(q.codebook[0] @ target)
    q(_as_map(batch))
    after = float(q.codebook[0] @ target)
    assert after > before + 0.01
    assert q.usage[0] == 64 and q.usage[1:].sum() == 0


def test_dead_codes_are_restarted_onto_data():
    torch.manual_seed(0)
    q = VectorQuantizer(num_codes=16, dim=8, decay=0.5, dead_threshold=2.0).train()
    q.initialised.fill_(True)  # skip k-means: start from random codes far from the data
    q.ema_count.fill_(2.0)
    q.ema_sum.copy_(q.codebook * 2.0)
    centre = _unit(8, seed=6)
    data = F.normalize(
        centre + 0.05 * torch.randn(256, 8, generator=torch.Generator().manual_seed(7)), dim=1
    )
    for _ in range(5):
        q(_as_map(data))
    # Every code now lies on the data, none is stranded far away.
    nearest_data = (q.codebook @ data.t()).max(dim=1).values
    assert (nearest_data > 0.95).all()
    assert (q.ema_count >= q.dead_threshold).all()


def test_kmeans_initialisation_spreads_codes_over_the_first_batch():
    torch.manual_seed(0)
    q = VectorQuantizer(num_codes=32, dim=8).train()
    data = _unit(2048, 8, seed=8)
    out = q(_as_map(data))
    assert bool(q.initialised)
    assert int(out.codes_in_use) > 24 and float(out.perplexity) > 16


def test_straight_through_gradients_reach_the_encoder():
    model = VQVAE(VQVAEConfig(width=0.125, codebook_size=64)).train()
    x = torch.rand(2, 3, 32, 32)
    feats = model.encoder(x)
    out = model.quantizer(model.content_latent(feats))
    image = model.decoder(out.quantized, model.style_head(feats))
    (image.mean() + out.commitment).backward()
    grads = [p.grad for p in model.to_code.parameters()] + [
        p.grad for p in model.encoder.stem.parameters()
    ]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_sizes_not_multiple_of_8_are_rejected_by_the_model():
    model = VQVAE(VQVAEConfig(width=0.125, codebook_size=64)).eval()
    with pytest.raises(InputError, match="multiples of 8"):
        model(torch.rand(1, 3, 30, 32), torch.rand(1, 3, 32, 32), torch.ones(1))


def test_bundle_records_codebook_and_code_parity(vq_bundle):
    m = json.loads((vq_bundle / "manifest.json").read_text())
    assert m["family"] == "vqvae" and m["parity"]["passed"]
    assert m["model_info"]["codebook_size"] == 256 and m["model_info"]["code_dim"] == 64
    assert m["model_info"]["codes_used_in_training"] is None  # never trained
    codes = [r for r in m["parity"]["results"] if r["name"] == "codes"]
    assert {r["size"] for r in codes} == {256, 384} and all(r["agreement"] == 1.0 for r in codes)
    onnx = pytest.importorskip("onnx")
    ops = {n.op_type for n in onnx.load(str(vq_bundle / "stylizer.onnx")).graph.node}
    assert "ReduceMax" in ops and not ops & {"Gather", "MatMul", "ArgMax"}  # codes by Conv
    nodes = onnx.load(str(vq_bundle / "content_codes.onnx")).graph.node
    argmax = next(n for n in nodes if n.op_type == "ArgMax")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in argmax.attribute}
    assert attrs["axis"] == 1  # over the K code channels
    assert not ops & {"OneHot", "Einsum", "NonZero", "CDist", "RandomNormalLike"}


@pytest.mark.parametrize("size", [(64, 96), (120, 72)])
def test_onnx_runtime_matches_pytorch_including_code_indices(vq_bundle, contents, styles, size):
    import cv2
    import onnxruntime as ort

    from styleship.runtime.image import read_image

    def load(paths, hw):
        return np.stack([cv2.resize(read_image(p).rgb, hw[::-1]).transpose(2, 0, 1) for p in paths])

    content, style = load(contents[:2], size), load(styles[2:4], (64, 64))
    alpha = np.array([1.0, 0.3], np.float32)
    model, _ = load_checkpoint(vq_bundle.parent / "vq")
    sess = ort.InferenceSession(str(vq_bundle / "fused.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(["image"], {"content": content, "style": style, "alpha": alpha})[0]
    with torch.no_grad():
        ref = model(*(torch.from_numpy(a) for a in (content, style, alpha))).numpy()
        latent = model.content_latent(model.encoder(torch.from_numpy(content)))
        sims = torch.einsum("bdhw,kd->bhwk", latent, model.quantizer.codebook)
    assert out.shape == (2, 3, *size) and np.abs(out - ref).max() < 1e-4
    codes = ort.InferenceSession(
        str(vq_bundle / "content_codes.onnx"), providers=["CPUExecutionProvider"]
    )
    ort_idx = codes.run(["codes"], {"content": content})[0]
    torch_idx = sims.argmax(-1).numpy()
    agree = ort_idx == torch_idx
    top2 = sims.topk(2, dim=-1).values
    ties = (top2[..., 0] - top2[..., 1]).numpy() < 1e-5
    assert ort_idx.shape == (2, size[0] // 8, size[1] // 8)
    assert (agree | ties).all() and agree.mean() > 0.99


def test_stylizer_runs_a_vq_bundle_unchanged(vq_bundle, contents, styles, tmp_path):
    import cv2

    from styleship.runtime import image as im
    from styleship.runtime.stylizer import Stylizer

    with Stylizer(vq_bundle, backend="ort-cpu", precision="fp32", cache_dir=tmp_path) as st:
        odd = im.Image(cv2.resize(im.read_image(contents[0]).rgb, (101, 77)))
        out = st.stylize(odd, styles[0])
        assert out.rgb.shape == (77, 101, 3)
        a = st.stylize(contents[1], styles=styles[:2], weights=[1, 0], max_size=96).rgb
        b = st.stylize(contents[1], styles[0], max_size=96).rgb
        c = st.stylize(contents[1], styles[0], alpha=0.0, max_size=96).rgb
        assert np.abs(a - b).max() < 1e-5 and np.abs(b - c).max() > 1e-4


def test_bad_vq_bundle_is_a_one_line_error(vq_bundle, contents, styles, tmp_path):
    import shutil

    from conftest import run_cli

    bad = shutil.copytree(vq_bundle, tmp_path / "bad.vqvae")
    m = json.loads((bad / "manifest.json").read_text())
    m["format_version"] = 7
    (bad / "manifest.json").write_text(json.dumps(m))
    proc = run_cli("stylize", contents[0], "-m", bad, "-s", styles[0], "-o", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "newer than this styleship reads" in proc.stderr
    proc = run_cli("inspect", vq_bundle)
    assert "codebook_size=256" in proc.stdout
