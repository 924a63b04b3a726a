"""Image decoding and encoding with OpenCV: every odd input a user can hand us."""

import struct

import cv2
import numpy as np
import pytest
from conftest import jpeg_with_orientation

from styleship.errors import InputError
from styleship.runtime import image as im


def _stripe() -> np.ndarray:
    """40×80 BGR: left quarter red, rest black."""
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20] = (0, 0, 255)
    return img


def test_exif_rotated_photo_comes_out_upright():
    data = jpeg_with_orientation(_stripe(), 6)
    img = im.decode(data)
    assert img.rgb.shape == (80, 40, 3)  # rotated 90° clockwise
    assert img.rgb[5, 20, 0] > 0.8 and img.rgb[75, 20, 0] < 0.2  # the red stripe is now on top
    # OpenCV's own orientation handling (IMREAD_COLOR) agrees with ours.
    ref = (
        cv2.cvtColor(
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
        )
        / 255.0
    )
    assert np.abs(ref - img.rgb).max() < 1e-6


def test_grayscale_rgba_and_16bit(tmp_path):
    gray = (np.arange(64 * 32) % 256).astype(np.uint8).reshape(32, 64)
    g = im.decode(cv2.imencode(".png", gray)[1].tobytes())
    assert (
        g.rgb.shape == (32, 64, 3) and np.allclose(g.rgb[..., 0], g.rgb[..., 2]) and g.alpha is None
    )
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 3] = np.linspace(0, 255, 32).astype(np.uint8)
    a = im.decode(cv2.imencode(".png", rgba)[1].tobytes())
    assert a.alpha is not None and abs(a.alpha[0, -1] - 1.0) < 1e-6 and a.alpha[0, 0] == 0
    deep = np.full((16, 16, 3), 40000, np.uint16)
    d = im.decode(cv2.imencode(".png", deep)[1].tobytes())
    assert d.bit_depth == 16 and abs(d.rgb[0, 0, 0] - 40000 / 65535) < 1e-6
    out = tmp_path / "deep.png"
    im.write_image(out, d)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back[0, 0, 0] == 40000


def test_cmyk_jpeg_is_converted():
    PIL = pytest.importorskip("PIL.Image")
    import io

    buf = io.BytesIO()
    PIL.new("CMYK", (32, 24), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)  # pure red in CMYK
    img = im.decode(buf.getvalue())
    assert img.rgb.shape == (24, 32, 3)
    r, g, b = img.rgb[12, 16]
    assert r > 0.8 and g < 0.2 and b < 0.2


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".gif"])
def test_declared_size_reads_headers(ext):
    if ext == ".gif":
        data = b"GIF89a" + struct.pack("<HH", 123, 45) + b"\0" * 20
    else:
        data = cv2.imencode(ext, np.zeros((45, 123, 3), np.uint8))[1].tobytes()
    assert im.declared_size(data) == (123, 45)


def test_pixel_limit_is_checked_before_decoding():
    # A PNG header that declares 100000×100000 with no pixel data behind it.
    header = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 100000, 100000)
    )
    with pytest.raises(InputError, match="over the 40 MP limit"):
        im.decode(header + b"\x08\x02\x00\x00\x00" + b"\0" * 4)
    small = cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes()
    with pytest.raises(InputError, match="MP limit"):
        im.decode(small, max_pixels=5000)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_files_are_refused(assets, ext):
    photo = cv2.imread(str(assets / "content" / "chelsea.jpg"))
    data = cv2.imencode(ext, photo)[1].tobytes()
    with pytest.raises(InputError, match="truncated"):
        im.decode(data[: len(data) // 2], "cut" + ext)


def test_unreadable_inputs(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, I am not a JPEG\n")
    with pytest.raises(InputError, match="empty"):
        im.read_image(tmp_path / "empty.jpg")
    with pytest.raises(InputError, match="not a readable image"):
        im.read_image(tmp_path / "text.jpg")
    with pytest.raises(InputError, match="is a directory"):
        im.read_image(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        im.read_image(tmp_path / "missing.png")


def test_pad_and_min_size():
    rgb = np.random.default_rng(0).random((37, 50, 3), dtype=np.float32)
    padded = im.pad_to_multiple(rgb)
    assert padded.shape == (40, 56, 3) and np.array_equal(padded[:37, :50], rgb)
    assert np.array_equal(padded[37, :50], rgb[35])  # reflection without repeating the edge
    with pytest.raises(InputError, match="at least 16 px"):
        im.check_min_size(np.zeros((1, 1, 3), np.float32), "content image")


def test_write_is_atomic_and_makes_the_directory(tmp_path):
    img = im.Image(np.full((16, 16, 3), 0.5, np.float32))
    im.write_image(tmp_path / "new" / "a.png", img)
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["a.png"]
    with pytest.raises(InputError, match="cannot write .txt"):
        im.write_image(tmp_path / "a.txt", img)
    im.write_image(tmp_path / "a.png", img)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "new"]  # no temp file left


def test_preserve_color_keeps_content_chroma():
    rng = np.random.default_rng(1)
    content = rng.random((16, 16, 3), dtype=np.float32)
    styled = np.repeat(rng.random((16, 16, 1), dtype=np.float32), 3, axis=2)  # gray
    out = im.preserve_color(styled, content)
    ycc_out = cv2.cvtColor(out, cv2.COLOR_RGB2YCrCb)
    ycc_c = cv2.cvtColor(content, cv2.COLOR_RGB2YCrCb)
    ycc_s = cv2.cvtColor(styled, cv2.COLOR_RGB2YCrCb)
    inside = (out > 0.01).all(-1) & (out < 0.99).all(-1)  # where no clipping happened
    assert np.abs(ycc_out[..., 1:] - ycc_c[..., 1:])[inside].max() < 1e-3
    assert np.abs(ycc_out[..., 0] - ycc_s[..., 0])[inside].max() < 1e-3


def test_written_files_get_normal_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        im.write_image(tmp_path / "a.png", im.Image(np.zeros((16, 16, 3), np.float32)))
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644


def _reference_encode(img: im.Image, ext: str) -> bytes:
    """The definition of encode's pixels: clip to [0, 1], scale, round half up, BGR(A)."""
    scale, dtype = (65535.0, np.uint16) if img.bit_depth == 16 else (255.0, np.uint8)
    planes = [img.rgb[..., ::-1]] + ([img.alpha[..., None]] if img.alpha is not None else [])
    ints = (np.clip(np.concatenate(planes, axis=2), 0, 1) * scale + 0.5).astype(dtype)
    return cv2.imencode(ext, ints)[1].tobytes()


@pytest.mark.parametrize("depth, with_alpha", [(8, False), (8, True), (16, True)])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_encode_writes_exactly_the_rounded_pixels(depth, with_alpha, ext):
    rng = np.random.default_rng(depth)
    rgb = rng.random((67, 45, 3), dtype=np.float32) * 1.4 - 0.2  # also outside [0, 1]
    rgb[0, :3, 0] = [0.5 / 255, 1.5 / 255, 254.5 / 255]  # on the rounding boundary
    alpha = rng.random((67, 45), dtype=np.float32) * 1.2 - 0.1 if with_alpha else None
    img = im.Image(rgb, alpha, depth)
    assert im.encode(img, ext) == _reference_encode(img, ext)


def test_encode_keeps_one_float_temporary():
    """Quantising before the channel swap keeps encode's peak memory near one float copy."""
    import tracemalloc

    img = im.Image(np.random.default_rng(0).random((1024, 1024, 3), dtype=np.float32))
    im.encode(img, ".bmp")  # warm up OpenCV's encoder
    tracemalloc.start()
    try:
        im.encode(img, ".bmp")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.6 * img.rgb.nbytes, f"peak {peak / 2**20:.1f} MiB"


def test_opencv_prints_nothing_on_a_damaged_file():
    """OpenCV's native logger would print a WARN line for a PNG with no pixel data."""
    import subprocess
    import sys
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    code = (
        "import sys\n"
        "from styleship.runtime import image as im\n"
        "try:\n"
        f"    im.decode({png!r})\n"
        "except im.InputError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "image is not a readable image (unknown format, or truncated)"
    assert proc.stderr == ""


def test_find_images_takes_absolute_globs_home_paths_and_bracketed_names(tmp_path, monkeypatch):
    from styleship.runtime.image import find_images

    for name in ("a.jpg", "b.png", "shot[1].jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    assert find_images([str(tmp_path / "*.jpg")]) == [tmp_path / "a.jpg", tmp_path / "shot[1].jpg"]
    assert find_images([str(tmp_path / "**" / "c.jpg")]) == [tmp_path / "sub" / "c.jpg"]
    # A file whose name looks like a pattern is that file, not a pattern.
    assert find_images([str(tmp_path / "shot[1].jpg")]) == [tmp_path / "shot[1].jpg"]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_images(["~/b.png"]) == [tmp_path / "b.png"]


def test_nchw_round_trip_keeps_every_pixel_and_channel():
    rng = np.random.default_rng(0)
    rgb = rng.random((17, 9, 3), dtype=np.float32)  # odd, non-square
    batch = np.concatenate([im.to_nchw(rgb[::-1]), im.to_nchw(rgb)])
    back = im.from_nchw(batch, 1)
    assert back.flags.c_contiguous and np.array_equal(back, rgb)
    grey = rng.random((1, 1, 5, 4), dtype=np.float32)
    assert im.from_nchw(grey).shape == (5, 4, 1)
