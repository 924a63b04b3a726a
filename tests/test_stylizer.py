"""The Stylizer API: sizes, strength, mixing, colour, caching; and no torch anywhere."""

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime.stylizer import Stylizer, mix_codes


@pytest.fixture(scope="module")
def stylizer(small_bundle, tmp_path_factory):
    with Stylizer(
        small_bundle, backend="ort-cpu", cache_dir=tmp_path_factory.mktemp("cache")
    ) as st:
        yield st


def test_output_keeps_the_content_size(stylizer, contents, styles):
    photo = im.read_image(contents[0])
    odd = im.Image(cv2.resize(photo.rgb, (101, 77)))  # not multiples of 8
    out = stylizer.stylize(odd, styles[0])
    assert out.rgb.shape == (77, 101, 3) and out.rgb.dtype == np.float32
    assert out.rgb.min() >= 0 and out.rgb.max() <= 1
    shrunk = stylizer.stylize(contents[0], styles[0], max_size=128)
    assert max(shrunk.rgb.shape[:2]) == 128


def test_alpha_blends_towards_the_content(stylizer, contents, styles):
    full = stylizer.stylize(contents[1], styles[0], alpha=1.0).rgb
    half = stylizer.stylize(contents[1], styles[0], alpha=0.5).rgb
    none = stylizer.stylize(contents[1], styles[0], alpha=0.0).rgb
    assert np.abs(full - none).mean() > np.abs(half - none).mean() > 0
    with pytest.raises(InputError, match="alpha"):
        stylizer.stylize(contents[1], styles[0], alpha=1.5)


def test_mixing_rules():
    a = {"m": np.array([[1.0, 2.0]], np.float32), "s": np.array([[3.0]], np.float32)}
    b = {"m": np.array([[3.0, 6.0]], np.float32), "s": np.array([[4.0]], np.float32)}
    rules = {"m": "linear", "s": "rms"}
    mixed = mix_codes([a, b], [1, 1], rules)
    assert np.allclose(mixed["m"], [[2.0, 4.0]])
    assert np.allclose(mixed["s"], [[np.sqrt((9 + 16) / 2)]])
    assert np.allclose(mix_codes([a, b], [1, 0], rules)["m"], a["m"])
    with pytest.raises(InputError, match="non-negative"):
        mix_codes([a, b], [1, -1], rules)
    with pytest.raises(InputError, match="2 styles but 1 weights"):
        mix_codes([a, b], [1], rules)


def test_mixing_through_the_graph(stylizer, contents, styles):
    only_a = stylizer.stylize(contents[2], styles[0]).rgb
    mixed_a = stylizer.stylize(contents[2], styles=styles[:2], weights=[1.0, 0.0]).rgb
    mixed = stylizer.stylize(contents[2], styles=styles[:2], weights=[0.5, 0.5]).rgb
    assert np.abs(only_a - mixed_a).max() < 1e-5
    assert np.abs(only_a - mixed).max() > 1e-3


def test_style_codes_are_cached_in_memory_and_on_disk(small_bundle, styles, tmp_path):
    with Stylizer(small_bundle, backend="ort-cpu", precision="fp32", cache_dir=tmp_path) as st:
        first = st.style_code(styles[1])
        st.style_code(styles[1])
        assert (st.cache.misses, st.cache.hits) == (1, 1)
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1
    with Stylizer(small_bundle, backend="ort-cpu", precision="fp32", cache_dir=tmp_path) as st:
        again = st.style_code(styles[1])
        assert st.cache.hits == 1 and st.cache.misses == 0
        assert all(np.array_equal(first[k], again[k]) for k in first)
    files[0].write_bytes(b"garbage")  # a corrupt entry is recomputed, not trusted
    with Stylizer(small_bundle, backend="ort-cpu", precision="fp32", cache_dir=tmp_path) as st:
        third = st.style_code(styles[1])
        assert st.cache.misses == 1
        assert all(np.allclose(first[k], third[k]) for k in first)


def test_alpha_channel_is_reattached(stylizer, styles, tmp_path):
    rgba = np.zeros((40, 48, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), rgba)
    out = stylizer.stylize(src, styles[0])
    im.write_image(tmp_path / "out.png", out)
    back = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert back.shape == (40, 48, 4) and np.array_equal(back[..., 3], rgba[..., 3])


def test_preserve_color_option(stylizer, contents, styles):
    out = stylizer.stylize(contents[0], styles[0], preserve_color=True, max_size=128).rgb
    content = im.resize_max_side(im.read_image(contents[0]).rgb, 128)
    chroma = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2YCrCb)[..., 1:]  # noqa: E731
    assert np.abs(chroma(out) - chroma(content)).mean() < 0.02


def test_runtime_runs_without_torch(small_bundle, contents, styles, tmp_path):
    """Block torch (and TensorRT) imports, import the server, then stylize a real photo."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "tensorrt", "onnx", "safetensors"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from styleship import Stylizer
        from styleship.runtime.image import write_image
        from styleship.serve import client, loadtest, models, server
    """)
    code += textwrap.dedent(f"""
        with Stylizer(r"{small_bundle}", backend="ort-cpu", precision="fp32", cache_dir=None) as st:
            out = st.stylize(r"{contents[0]}", r"{styles[0]}", max_size=96)
        write_image(r"{tmp_path / "out.png"}", out)
        assert "torch" not in sys.modules and "tensorrt" not in sys.modules
        print("ok", out.rgb.shape)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok") and (tmp_path / "out.png").is_file()


def test_a_folder_runs_largest_first_and_answers_in_the_given_order(
    stylizer, contents, styles, tmp_path, monkeypatch
):
    """Engines grow their buffers for a larger input: the largest photo (after padding to
    the size multiple) runs first, so they grow once; results keep the caller's order."""
    from styleship.runtime.files import stylize_files

    photo = cv2.imread(str(contents[0]))
    sizes = [(96, 64), (130, 90), (60, 60), (129, 91), (140, 40)]  # (w, h)
    files = []
    for i, (w, h) in enumerate(sizes):
        files.append(tmp_path / f"p{i}.png")
        cv2.imwrite(str(files[-1]), cv2.resize(photo, (w, h)))
    files.append(tmp_path / "broken.jpg")
    files[-1].write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    out.mkdir()
    seen = []
    real = stylizer.stylize
    monkeypatch.setattr(stylizer, "stylize", lambda src, **kw: seen.append(src) or real(src, **kw))
    results = stylize_files(stylizer, files, out, style=styles[0])
    assert [r.input for r in results] == files
    # padded to multiples of 8: 136×96 (p1, p3, in the given order) > 96×64 > 144×40 > 64×64;
    # the unreadable file last
    assert [p.stem for p in seen] == ["p1", "p3", "p0", "p4", "p2", "broken"]
    assert results[-1].output is None and "broken.jpg" in results[-1].error
    for r, (w, h) in zip(results, sizes):
        assert cv2.imread(str(r.output)).shape[:2] == (h, w)
