"""Style banks: named precomputed style codes in a bundle (DESIGN.md §4 `styles/`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import ASSETS, run_cli

from styleship.errors import InputError, ModelError
from styleship.runtime import image as im
from styleship.runtime.bundle import Bundle
from styleship.runtime.style_bank import parse_spec
from styleship.runtime.stylizer import Stylizer
from styleship.serve.models import StylizeModel

PAINTINGS = ("starry_night", "the_scream")


@pytest.fixture(scope="module")
def banked(tmp_path_factory):
    """The shipped ST-VAE demo, exported again with a bank of two paintings."""
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("bank")
    for name in PAINTINGS:
        shutil.copy(ASSETS / "styles" / f"{name}.jpg", tmp / f"{name}.jpg")
    out = tmp / "demo.stvae"
    result = run_cli(
        "export", ASSETS / "models/stvae-demo.stvae/checkpoint", "-o", out, "--style-bank", tmp
    )
    assert result.returncode == 0, result.stderr
    return out


def test_bank_is_hashed_in_the_manifest_and_inspect_lists_it(banked):
    b = Bundle.load(banked)
    assert b.style_bank.names == PAINTINGS
    assert {"styles/styles.json", "styles/style_mu.npy"} <= set(b.manifest["files"])
    shown = run_cli("inspect", banked)
    assert shown.returncode == 0 and all(n in shown.stdout for n in PAINTINGS)
    with (banked / "styles/style_mu.npy").open("r+b") as fh:  # tamper, then restore
        original = fh.read()
        fh.seek(len(original) - 4)
        fh.write(b"\0\0\0\1")
    try:
        with pytest.raises(ModelError, match="styles/style_mu.npy"):
            Bundle.load(banked)
    finally:
        (banked / "styles/style_mu.npy").write_bytes(original)


def test_stylize_by_name_equals_stylize_with_the_painting(banked, contents):
    with Stylizer(banked, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        for name in PAINTINGS:
            by_name = st.stylize(contents[0], name, max_size=128).rgb
            by_image = st.stylize(contents[0], ASSETS / f"styles/{name}.jpg", max_size=128).rgb
            np.testing.assert_array_equal(by_name, by_image)


def test_cli_stylizes_by_bank_name_and_refuses_unknown_names(banked, contents, tmp_path):
    """`stylize -s NAME` through the command line equals the painting passed as a file."""
    photo = contents[0]
    by_name = run_cli("stylize", photo, "-m", banked, "-s", "the_scream", "-o", tmp_path / "a.png")
    assert by_name.returncode == 0, by_name.stderr
    painting = ASSETS / "styles/the_scream.jpg"
    by_file = run_cli("stylize", photo, "-m", banked, "-s", painting, "-o", tmp_path / "b.png")
    assert by_file.returncode == 0, by_file.stderr
    a, b = im.read_image(tmp_path / "a.png").rgb, im.read_image(tmp_path / "b.png").rgb
    np.testing.assert_array_equal(a, b)
    bad = run_cli("stylize", photo, "-m", banked, "-s", "no_such", "-o", tmp_path / "c.png")
    assert bad.returncode == 1 and "starry_night, the_scream" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "c.png").exists()


def test_weighted_names_equal_mixing(banked, contents):
    spec = f"{PAINTINGS[0]}:0.7,{PAINTINGS[1]}:0.3"
    paths = [ASSETS / f"styles/{n}.jpg" for n in PAINTINGS]
    with Stylizer(banked, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        named = st.stylize(contents[1], spec, max_size=128).rgb
        mixed = st.stylize(contents[1], styles=paths, weights=[0.7, 0.3], max_size=128).rgb
        np.testing.assert_allclose(named, mixed, atol=1e-6)
        with pytest.raises(InputError, match="starry_night, the_scream"):
            st.stylize(contents[1], "no_such_style")


def test_server_takes_bank_names_and_painting_ids_as_style_ids(banked, contents):
    pixels = im.to_uint8(im.resize_max_side(im.read_image(contents[0]).rgb, 96))[None]
    with Stylizer(banked, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        model = StylizeModel(st, im.DEFAULT_MAX_PIXELS, max_batch=4)
        entry = next(e for e in json.loads((banked / "styles/styles.json").read_text())["styles"])
        outs = [
            model([{"pixels": pixels, "style_id": np.array([[sid.encode()]], dtype=object)}])
            for sid in (entry["name"], entry["source_sha256"])
        ]
        expected = st.stylize(im.Image(pixels[0] / np.float32(255)), entry["name"]).rgb
    for out in outs:
        np.testing.assert_array_equal(out[0]["pixels"][0], im.to_uint8(expected))


def test_spec_parsing():
    assert parse_spec("a") == [("a", 1.0)]
    assert parse_spec("3:0.5, 12:0.5") == [("3", 0.5), ("12", 0.5)]
    assert parse_spec("a:x") is None and parse_spec(",") is None
