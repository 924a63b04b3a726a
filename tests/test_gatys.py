"""The Gatys baseline: exact budgets, budgets read off one run, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

pytest.importorskip("torch")

from styleship.errors import InputError
from styleship.models.gatys import Gatys, GatysConfig
from styleship.runtime import image as im


@pytest.fixture(scope="module")
def pair(contents, styles):
    import cv2

    def load(path):
        return cv2.resize(im.read_image(path).rgb, (48, 48), interpolation=cv2.INTER_AREA)

    return load(contents[1]), load(styles[1])


@pytest.fixture(scope="module")
def baseline() -> Gatys:
    return Gatys(GatysConfig(), "random:0")


def test_lbfgs_spends_exactly_its_budget(baseline, pair):
    calls = []
    result = baseline.run(*pair, budget=13, checkpoints=[4, 9], on_call=calls.append)
    assert result.calls == 13 and calls == list(range(1, 14))
    assert [r["calls"] for r in result.checkpoints] == [4, 9, 13]
    seconds = [r["seconds"] for r in result.checkpoints]
    assert seconds == sorted(seconds)
    totals = [r["total_loss"] for r in result.checkpoints]
    assert totals[-1] < totals[0]  # it optimises
    assert result.image.shape == (48, 48, 3) and 0 <= result.image.min() <= result.image.max() <= 1


def test_a_smaller_budget_is_a_prefix_of_a_larger_one(baseline, pair):
    """The benchmark reads 100/300/500 off one run: the 5-call run equals the 5-call mark."""
    long = baseline.run(*pair, budget=9, checkpoints=[5], snapshots=True)
    short = baseline.run(*pair, budget=5)
    assert np.abs(long.snapshots[5] - short.image).max() < 1e-5
    assert long.checkpoints[0]["total_loss"] == pytest.approx(short.checkpoints[-1]["total_loss"])


def test_adam_and_noise_init(pair):
    g = Gatys(GatysConfig(optimizer="adam", lr=0.02, init="noise", seed=3), "random:0")
    result = g.run(*pair, budget=6)
    assert result.calls == 6
    again = g.run(*pair, budget=6)
    assert np.array_equal(result.image, again.image)  # seeded noise


def test_config_is_checked():
    with pytest.raises(InputError, match="optimizer"):
        GatysConfig(optimizer="sgd")
    with pytest.raises(InputError, match="unknown VGG layer"):
        GatysConfig(content_layer="relu9_9")
    with pytest.raises(InputError, match="one layer weight per style layer"):
        GatysConfig(layer_weights=(1.0,))


def test_gatys_command(contents, styles, tmp_path):
    out = tmp_path / "g.png"
    r = run_cli(
        "gatys",
        contents[1],
        styles[1],
        "--steps",
        "3",
        "--size",
        "40",
        "--vgg",
        "random:0",
        "-o",
        out,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    img = im.read_image(out)
    assert max(img.size) == 40
    r = run_cli("gatys", contents[1], styles[1], "--optimizer", "sgd", "-o", out)
    assert r.returncode == 1 and r.stderr.strip().startswith("error: optimizer must be")
    r = run_cli("gatys", contents[1], styles[1], "--vgg", "random:0", "-o", tmp_path / "g.xyz")
    assert r.returncode == 1 and "cannot write .xyz" in r.stderr
