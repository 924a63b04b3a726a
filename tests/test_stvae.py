"""The ST-VAE model, its checkpoints, and the official-checkpoint importer."""

import json

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from styleship.errors import ModelError  # noqa: E402
from styleship.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from styleship.models.stvae import STVAE, STVAEConfig  # noqa: E402
from styleship.models.stvae_official import import_official  # noqa: E402

# Key -> shape tables of the released files (reference/stvae.md §6), z = 256.
ENC = {
    "conv1": (3, 3, 1),
    "conv2": (64, 3, 3),
    "conv3": (64, 64, 3),
    "conv4": (128, 64, 3),
    "conv5": (128, 128, 3),
    "conv6": (256, 128, 3),
    "conv7": (256, 256, 3),
    "conv8": (256, 256, 3),
    "conv9": (256, 256, 3),
    "conv10": (512, 256, 3),
}
DEC = {
    "conv11": (256, 512),
    "conv12": (256, 256),
    "conv13": (256, 256),
    "conv14": (256, 256),
    "conv15": (128, 256),
    "conv16": (128, 128),
    "conv17": (64, 128),
    "conv18": (64, 64),
    "conv19": (3, 64),
}


def _official_states(seed: int = 0) -> tuple[dict, dict, dict]:
    g = torch.Generator().manual_seed(seed)

    def t(*shape, scale=None):
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        return torch.randn(*shape, generator=g) * (scale or (2.0 / fan_in) ** 0.5)

    enc = {}
    for name, (o, i, k) in ENC.items():
        enc[f"{name}.weight"], enc[f"{name}.bias"] = t(o, i, k, k), t(o, scale=0.01)
    dec = {}
    for name, (o, i) in DEC.items():
        dec[f"{name}.weight"], dec[f"{name}.bias"] = t(o, i, 3, 3), t(o, scale=0.01)
    mat = {}
    for net in ("snet", "cnet"):
        for idx, (o, i) in zip((0, 2, 4), ((256, 512), (128, 256), (32, 128))):
            mat[f"{net}.convs.{idx}.weight"] = t(o, i, 3, 3)
            mat[f"{net}.convs.{idx}.bias"] = t(o, scale=0.01)
        mat[f"{net}.fc.weight"], mat[f"{net}.fc.bias"] = t(1024, 1024), t(1024, scale=0.01)
    mat["VAE.encode.0.weight"], mat["VAE.encode.0.bias"] = t(512, 512, scale=0.01), t(512)
    for bn, n in (("VAE.bn", 256), ("VAE.decode.1", 512)):
        mat[f"{bn}.weight"], mat[f"{bn}.bias"] = 1 + 0.1 * t(n, scale=1), 0.1 * t(n, scale=1)
        mat[f"{bn}.running_mean"] = 0.1 * t(n, scale=1)
        mat[f"{bn}.running_var"] = 1 + t(n, scale=1).abs()
        mat[f"{bn}.num_batches_tracked"] = torch.tensor(100)
    mat["VAE.decode.0.weight"], mat["VAE.decode.0.bias"] = t(512, 256), t(512, scale=0.01)
    mat["VAE.decode.3.weight"], mat["VAE.decode.3.bias"] = t(512, 512), t(512, scale=0.01)
    mat["compress.weight"], mat["compress.bias"] = t(32, 512, 1, 1), t(32, scale=0.01)
    mat["unzip.weight"], mat["unzip.bias"] = t(512, 32, 1, 1), t(512, scale=0.01)
    return enc, dec, mat


def _official_forward(enc, dec, mat, content, style):
    """An independent re-statement of the official eval forward pass (stvae.md §1-3)."""

    def conv(x, sd, name, pad="reflect"):
        w = sd[f"{name}.weight"]
        if w.shape[-1] == 3 and pad == "reflect":
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, w, sd[f"{name}.bias"], padding=1 if pad == "zero" else 0)

    def encoder(x):
        x = conv(x, enc, "conv1")
        for i in range(2, 11):
            x = F.relu(conv(x, enc, f"conv{i}"))
            if i in (3, 5, 9):
                x = F.max_pool2d(x, 2, 2)
        return x

    def decoder(x):
        for i in range(11, 20):
            x = conv(x, dec, f"conv{i}")
            x = F.relu(x) if i < 19 else x
            if i in (11, 15, 17):
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def cnn(x, net):
        for idx in (0, 2, 4):
            x = conv(x, mat, f"{net}.convs.{idx}", pad="zero")
            x = F.relu(x) if idx < 4 else x
        b, c, h, w = x.shape
        x = x.view(b, c, -1)
        gram = torch.bmm(x, x.transpose(1, 2)).div(h * w)
        return F.linear(gram.view(b, -1), mat[f"{net}.fc.weight"], mat[f"{net}.fc.bias"])

    def bn(x, p):
        return F.batch_norm(
            x,
            mat[f"{p}.running_mean"],
            mat[f"{p}.running_var"],
            mat[f"{p}.weight"],
            mat[f"{p}.bias"],
            False,
            0.0,
            1e-5,
        )

    def vae(mean):
        h = F.linear(mean, mat["VAE.encode.0.weight"], mat["VAE.encode.0.bias"])
        mu, logvar = h.chunk(2, dim=1)
        z = bn(mu, "VAE.bn") + torch.exp(logvar)
        h = F.relu(
            bn(F.linear(z, mat["VAE.decode.0.weight"], mat["VAE.decode.0.bias"]), "VAE.decode.1")
        )
        return F.linear(h, mat["VAE.decode.3.weight"], mat["VAE.decode.3.bias"])

    cF, sF = encoder(content), encoder(style)
    b, c, h, w = cF.shape
    cF = cF - cF.view(b, c, -1).mean(2).view(b, c, 1, 1)
    s_mean = vae(sF.view(b, c, -1).mean(2)).view(b, c, 1, 1)
    sF = sF - s_mean
    comp = F.conv2d(cF, mat["compress.weight"], mat["compress.bias"]).view(b, 32, -1)
    trans = torch.bmm(cnn(sF, "snet").view(b, 32, 32), cnn(cF, "cnet").view(b, 32, 32))
    feat = torch.bmm(trans, comp).view(b, 32, h, w)
    out = F.conv2d(feat, mat["unzip.weight"], mat["unzip.bias"]) + s_mean
    return decoder(out)


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    enc, dec, mat = _official_states()
    del mat["VAE.bn.num_batches_tracked"]  # older files lack the counters: must be tolerated
    for name, sd in (("vgg_r41", enc), ("dec_r41", dec), ("matrix_r41_new", mat)):
        torch.save(sd, d / f"{name}.pth")
    return d, (enc, dec, mat)


def test_importer_matches_the_official_forward_pass(official_files):
    d, states = official_files
    model, weights = import_official(d / "vgg_r41.pth", d / "dec_r41.pth", d / "matrix_r41_new.pth")
    assert model.config == STVAEConfig(width=1.0, z_dim=256, matrix_size=32)
    assert weights["source"] == "stvae-official" and len(weights["files"]) == 3
    g = torch.Generator().manual_seed(1)
    content, style = torch.rand(2, 3, 48, 64, generator=g), torch.rand(2, 3, 56, 40, generator=g)
    with torch.no_grad():
        ours = model(content, style, torch.ones(2))
        ref = _official_forward(*states, content, style).clamp(0, 1)
    assert ours.shape == (2, 3, 48, 64)
    assert ref.std() > 0.05 and torch.allclose(ours, ref, atol=1e-5)


def test_importer_names_a_missing_or_misshaped_tensor(official_files, tmp_path):
    d, (_enc, dec, _mat) = official_files
    broken = {k: v for k, v in dec.items() if k != "conv19.bias"}
    torch.save(broken, tmp_path / "dec.pth")
    with pytest.raises(ModelError, match=r"decoder\.conv19\.bias"):
        import_official(d / "vgg_r41.pth", tmp_path / "dec.pth", d / "matrix_r41_new.pth")
    torch.save({**dec, "conv12.weight": torch.zeros(256, 256, 1, 1)}, tmp_path / "dec2.pth")
    with pytest.raises(ModelError, match=r"conv12\.weight.*\[256, 256, 1, 1\]"):
        import_official(d / "vgg_r41.pth", tmp_path / "dec2.pth", d / "matrix_r41_new.pth")


def test_inference_is_deterministic_and_alpha_matters(small_checkpoint):
    model, _ = load_checkpoint(small_checkpoint)
    x, s = torch.rand(2, 3, 64, 40), torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        a = model(x, s, torch.ones(2))
        b = model(x, s, torch.ones(2))
        c = model(x, s, torch.zeros(2))
    assert torch.equal(a, b)
    assert a.shape == (2, 3, 64, 40) and a.min() >= 0 and a.max() <= 1
    assert (a - c).abs().max() > 1e-3


def test_checkpoint_round_trip(small_checkpoint, tmp_path):
    model, meta = load_checkpoint(small_checkpoint)
    assert meta["weights"]["vgg"]["source"] == "random" and meta["weights"]["untrained"]
    path = save_checkpoint(tmp_path / "copy", "stvae", model, meta["weights"])
    again, _ = load_checkpoint(path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_checkpoint_errors_name_the_tensor(small_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(small_checkpoint)
    meta = small_checkpoint.with_suffix(".json").read_text()
    (tmp_path / "a.json").write_text(meta)
    save_file(
        {k: v for k, v in tensors.items() if k != "decoder.conv19.weight"},
        tmp_path / "a.safetensors",
    )
    with pytest.raises(ModelError, match=r"missing tensor 'decoder\.conv19\.weight'"):
        load_checkpoint(tmp_path / "a")
    tensors["transform.compress.weight"] = torch.zeros(5, 5, 1, 1)
    save_file(tensors, tmp_path / "a.safetensors")
    with pytest.raises(ModelError, match=r"transform\.compress\.weight.*\[5, 5, 1, 1\]"):
        load_checkpoint(tmp_path / "a")
    data = json.loads(meta)
    data["config"]["depth"] = 3
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="unknown keys: depth"):
        load_checkpoint(tmp_path / "a")


def test_width_multiplier_narrows_every_stage():
    small = STVAE(STVAEConfig(width=0.25, z_dim=64))
    full = STVAE(STVAEConfig())
    n_small = sum(p.numel() for p in small.parameters())
    n_full = sum(p.numel() for p in full.parameters())
    assert n_small < n_full / 4  # the m²×m² linears (2 × 1M) do not scale with width
    assert small.decoder.conv11.in_channels == 128 and full.decoder.conv11.in_channels == 512
