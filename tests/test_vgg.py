"""VGG-19 layouts and weight sources."""

import pytest

torch = pytest.importorskip("torch")

from conftest import write_pickled_code  # noqa: E402

from styleship.errors import ModelError  # noqa: E402
from styleship.models.vgg import (  # noqa: E402
    LAYERS,
    NormalisedVGG,
    VGG19Features,
    random_vgg19,
    resolve_vgg19,
)

# torchvision's vgg19().features: conv layers sit at these indices up to conv5_1.
TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)


def test_parameter_names_match_torchvision():
    names = set(VGG19Features().state_dict())
    expected = {f"features.{i}.{p}" for i in TORCHVISION_CONVS for p in ("weight", "bias")}
    assert names == expected
    shapes = VGG19Features().state_dict()
    assert tuple(shapes["features.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(shapes["features.28.weight"].shape) == (512, 512, 3, 3)


def test_named_layers_have_expected_shapes():
    feats = VGG19Features(width=0.25)(torch.rand(1, 3, 64, 64), tuple(LAYERS))
    assert feats["relu1_1"].shape == (1, 16, 64, 64)
    assert feats["relu4_1"].shape == (1, 128, 8, 8)
    assert feats["relu5_1"].shape == (1, 128, 4, 4)


def test_no_source_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("STYLESHIP_VGG19", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached hub download
    with pytest.raises(ModelError, match="random:SEED"):
        resolve_vgg19(None)


def test_random_source_is_seeded_and_recorded():
    a, prov = resolve_vgg19("random:3", width=0.25)
    b, _ = resolve_vgg19("random:3", width=0.25)
    c, _ = resolve_vgg19("random:4", width=0.25)
    assert prov["source"] == "random" and prov["seed"] == 3 and "not pretrained" in prov["note"]
    assert torch.equal(a["features.0.weight"], b["features.0.weight"])
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_file_and_env_sources(tmp_path, monkeypatch):
    state = random_vgg19(seed=1)
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a full torchvision file has these too
    path = tmp_path / "vgg19-test.pth"
    torch.save(state, path)
    weights, prov = resolve_vgg19(str(path))
    assert prov["source"] == "file" and len(prov["sha256"]) == 64
    assert "classifier.0.weight" not in weights
    assert torch.equal(weights["features.0.weight"], state["features.0.weight"])
    monkeypatch.setenv("STYLESHIP_VGG19", str(path))
    assert resolve_vgg19(None)[1]["sha256"] == prov["sha256"]


def test_pretrained_weights_only_at_full_width(tmp_path):
    path = tmp_path / "v.pth"
    torch.save(random_vgg19(seed=0), path)
    with pytest.raises(ModelError, match="width 1.0"):
        resolve_vgg19(str(path), width=0.5)


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    write_pickled_code(tmp_path / "evil.pth", "features.0.weight", marker)
    with pytest.raises(ModelError, match="refused"):
        resolve_vgg19(str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_normalised_encoder_from_torchvision_normalises_in_conv1():
    enc = NormalisedVGG(width=0.25)
    enc.load_torchvision(random_vgg19(seed=0, width=0.25))
    x = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(enc.conv1(x), (x - mean) / std, atol=1e-6)
