"""Tiled stylization: geometry, blending weights, and tiled against untiled on a real photo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT

from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime import tiling
from styleship.runtime.stylizer import Stylizer

DEMOS = [ROOT / "assets" / "models" / n for n in ("stvae-demo.stvae", "vqvae-demo.vqvae")]


def test_tiles_cover_the_image_and_blend_to_identity():
    assert tiling.starts(1000, 256, 64) == [0, 186, 372, 558, 744]  # 5 tiles, even overlaps ≥ 64
    assert tiling.starts(2048, 1024, 64) == [0, 512, 1024]
    assert tiling.starts(200, 256, 64) == [0]
    rgb = np.random.default_rng(0).random((300, 410, 3), dtype=np.float32)
    seen = []

    def identity(tiles):
        seen.extend(t.shape for t in tiles)
        return [t.copy() for t in tiles]

    out = tiling.stylize_tiled(rgb, identity, 128, 32, batch=3)
    assert set(seen) == {(128, 128, 3)}  # equal tiles, so they batch
    assert np.abs(out - rgb).max() < 1e-5  # weights are normalised everywhere
    with pytest.raises(InputError):
        tiling.check_tiling(100, 16, 8)
    with pytest.raises(InputError):
        tiling.check_tiling(256, 200, 8)


def without_split(bundle: Path, tmp_path: Path) -> Path:
    """A copy of `bundle` whose manifest has no split: tiles blend with their own statistics."""
    copy = Path(shutil.copytree(bundle, tmp_path / bundle.name))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.pop("split", None)
    for name in [g for g in manifest["graphs"] if g.startswith("split_")]:
        del manifest["graphs"][name]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("bundle", DEMOS, ids=["stvae", "vqvae"])
def test_tiled_matches_untiled_without_seams(bundle, contents, styles, tmp_path):
    """Overlap blending leaves no seams; differences elsewhere come from per-tile statistics
    (the fallback for bundles without a split; tests/test_exact_tiling.py has the exact path)."""
    bundle = without_split(bundle, tmp_path)
    img = im.Image(cv2.resize(im.read_image(contents[0]).rgb, (768, 512)))
    with Stylizer(bundle, "ort-cpu", precision="fp32", cache_dir=None) as st:
        ref = st.stylize(img, styles[1], tile=None).rgb
        tiled = st.stylize(img, styles[1], tile=512, overlap=64).rgb
        hard = st.stylize(img, styles[1], tile=512, overlap=0).rgb
        assert st.last_tiling["mode"] == "blend"
    err = np.abs(tiled - ref)
    assert err.mean() < 0.12, err.mean()

    def seam_ratio(out):
        """Largest column-to-column change at a tile edge, relative to the untiled image's."""
        cols = [x for x in tiling.starts(768, 512, 64)[1:]] + [512]
        jump = np.abs(np.diff(out, axis=1)).mean(axis=(0, 2))
        base = np.abs(np.diff(ref, axis=1)).mean(axis=(0, 2))
        return max(jump[c - 1] / base[c - 1] for c in cols)

    assert seam_ratio(tiled) < 1.6 < seam_ratio(hard)
