"""Statistics-exact tiling: the split graphs, the streamed statistics, and `tile="auto"`."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import ROOT, run_cli

from styleship.compare import psnr
from styleship.runtime import exact_tiling as et
from styleship.runtime import image as im
from styleship.runtime import memory
from styleship.runtime.stylizer import Stylizer

SHIPPED = sorted((ROOT / "assets" / "models").glob("*.*"))


def _photo(contents, height: int, width: int) -> im.Image:
    rgb = im.read_image(contents[2]).rgb
    return im.Image(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))


def test_interiors_partition_the_image_on_the_grid():
    boxes = et.interiors(1000, 1536, 384, 8)
    cover = np.zeros((1000, 1536), np.int32)
    for y0, y1, x0, x1 in boxes:
        assert y0 % 8 == 0 and x0 % 8 == 0
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()  # every pixel in exactly one interior
    assert et.with_halo((0, 384, 384, 768), 1000, 1536, 64) == (0, 448, 320, 832)


def test_streamed_moments_equal_the_whole_images():
    x = np.random.default_rng(0).normal(3.0, 2.0, (4, 10_000)).astype(np.float32)
    moments, outer = et._Moments(), et._Outer()
    for part in np.array_split(x, 7, axis=1):
        moments.add(part)
        outer.add(part)
    x64 = x.astype(np.float64)
    assert np.allclose(moments.mean, x64.mean(1), rtol=1e-12)
    assert np.allclose(moments.m2 / moments.n, x64.var(1), rtol=1e-10)
    assert np.allclose(outer.sum / outer.n, x64 @ x64.T / x.shape[1], rtol=1e-12)


def _split_manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())["split"]


def test_split_finds_each_familys_statistics(small_bundle, vq_bundle, magenta_bundle):
    st, vq, mg = (_split_manifest(b) for b in (small_bundle, vq_bundle, magenta_bundle))
    for split in (st, vq, mg):
        assert split["exact"] and split["check"]["psnr_db"] >= 50, split.get("reason")
        assert split["halo"] % split["multiple"] == 0 and split["halo"] > split["receptive_reach"]
    # ST-VAE: the content mean, then the Gram of cnet(c - mean) over all positions.
    assert [(s["kind"], s["level"]) for s in st["stats"]] == [("mean", 0), ("gram", 1)]
    # Magenta: 13 conditional instance norms, one level each, mean and variance.
    assert len(mg["levels"]) == 13 and {s["kind"] for s in mg["stats"]} == {"mean", "var"}
    # VQ-VAE: the encoder's stage statistics (style of the content) first, then FiLM norms.
    assert vq["stats"][0]["level"] == 0 and len(vq["levels"]) > 2


@pytest.fixture(scope="module")
def shipped_split(tmp_path_factory) -> list:
    """The shipped bundles, with a split added if they were exported without one."""
    from styleship.export.split import upgrade

    out = []
    for src in SHIPPED:
        dst = tmp_path_factory.mktemp("shipped") / src.name
        shutil.copytree(src, dst)
        if "split" not in json.loads((dst / "manifest.json").read_text()):
            upgrade(dst, log=lambda m: None)
        out.append(dst)
    return out


@pytest.mark.parametrize("which", ["small_bundle", "vq_bundle", "magenta_bundle", "shipped"])
def test_exact_tiles_match_untiled(which, request, shipped_split, contents, styles):
    bundles = shipped_split if which == "shipped" else [request.getfixturevalue(which)]
    img = _photo(contents, 384, 520)  # not a multiple of 8 or of the tile: pads and crops
    for bundle in bundles:
        with Stylizer(bundle, "ort-cpu", precision="fp32", cache_dir=None) as st:
            ref = st.stylize(img, styles[1], tile=0, alpha=0.7).rgb
            tiled = st.stylize(img, styles[1], tile=128, alpha=0.7).rgb
            assert st.last_tiling["mode"] == "exact", st.last_tiling
        assert tiled.shape == ref.shape
        assert psnr(tiled, ref) >= 50.0, (bundle.name, psnr(tiled, ref))


def test_2048_by_1536_in_768_tiles_holds_35_db(shipped_split, magenta_bundle, contents):
    """2048×1536 in 768-pixel tiles, each shipped family and the pretrained model: the
    blended tiles were 16-23 dB from untiled (docs/tiling.md); exact tiles must hold 35."""
    img = _photo(contents, 1536, 2048)
    style = ROOT / "assets" / "styles" / "starry_night.jpg"
    for bundle in [*shipped_split, magenta_bundle]:
        with Stylizer(bundle, "ort-cpu", precision="fp32", cache_dir=None) as st:
            ref = st.stylize(img, style, tile=0).rgb
            tiled = st.stylize(img, style, tile=768).rgb
            assert st.last_tiling["mode"] == "exact", st.last_tiling
        assert psnr(tiled, ref) >= 35.0, (bundle.name, psnr(tiled, ref))


def test_bundles_without_split_blend_and_say_why(bundle_copy, contents, styles):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest.pop("split")
    for name in [g for g in manifest["graphs"] if g.startswith("split_")]:
        del manifest["graphs"][name]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with Stylizer(bundle_copy, "ort-cpu", precision="fp32", cache_dir=None) as st:
        out = st.stylize(contents[0], styles[0], max_size=300, tile=128)
        assert st.last_tiling["mode"] == "blend" and "split" in st.last_tiling["inexact"]
    assert out.rgb.shape[:2] == im.resize_max_side(im.read_image(contents[0]).rgb, 300).shape[:2]


def test_auto_tiles_only_when_memory_demands():
    calls = []

    def bpp():
        calls.append(1)
        return 400.0, "test"

    # 12 MP at 400 B/px needs about 5.5 GB: untiled under a 10 GB budget ...
    small = memory.auto_tile(3000, 4000, 10 * 2**30, bpp, halo=80)
    assert small["tile"] is None and "fits" in small["reason"] and calls
    # ... a tiny image does not even measure ...
    calls.clear()
    assert memory.auto_tile(512, 512, 10 * 2**30, bpp, halo=80)["tile"] is None and not calls
    # ... and 100 MP tiles, with the largest tile that fits beside the image buffers.
    big = memory.auto_tile(8660, 11547, 10 * 2**30, bpp, halo=80)
    side = big["tile"]
    assert side % 256 == 0 and "over the" in big["reason"]
    room = 10 * 2**30 - memory.IMAGE_BYTES_PER_PIXEL * big["pixels"]
    assert 400 * (side + 160) ** 2 <= room < 400 * (side + 256 + 160) ** 2


def test_cli_auto_reports_its_choice(small_bundle, contents, styles, tmp_path):
    args = ["stylize", str(contents[0]), "-m", str(small_bundle), "-s", str(styles[0])]
    res = run_cli(*args, "-o", str(tmp_path / "a.png"), "--max-size", "256", "--json")
    assert res.returncode == 0, res.stderr
    tiling = json.loads(res.stdout)["results"][0]["tiling"]
    assert tiling["mode"] == "untiled" and "fits" in tiling["reason"]
    res = run_cli(
        *args, "-o", str(tmp_path / "b.png"), "--max-size", "512", "--json", "--max-memory", "40M"
    )
    assert res.returncode == 0, res.stderr
    tiling = json.loads(res.stdout)["results"][0]["tiling"]
    assert tiling["mode"] == "exact" and tiling["tile"] == memory.MIN_TILE, tiling
    bad = run_cli(*args, "-o", str(tmp_path / "c.png"), "--max-memory", "lots")
    assert bad.returncode != 0 and "--max-memory" in bad.stderr and "Traceback" not in bad.stderr
