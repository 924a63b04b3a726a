"""The command line as a user meets it: one-line errors, exit codes, nothing partial."""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, jpeg_with_orientation, run_cli, write_pickled_code


def _one_line_error(proc, pattern: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert any(line.startswith("error:") and pattern in line for line in lines), proc.stderr


@pytest.mark.parametrize(
    "command", ["doctor", "init", "import", "export", "inspect", "stylize", "demo"]
)
def test_help_shows_an_example(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "Example" in proc.stdout


def test_bad_usage_exits_2(small_bundle):
    assert run_cli("stylize").returncode == 2
    assert run_cli("nosuchcommand").returncode == 2


def test_doctor_json():
    proc = run_cli("doctor", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["backends"]["ort-cpu"] == "available"
    assert report["problems"] == []


def test_inspect(small_bundle):
    proc = run_cli("inspect", small_bundle, "--json")
    data = json.loads(proc.stdout)
    assert data["family"] == "stvae" and data["parity"]["passed"]
    human = run_cli("inspect", small_bundle)
    assert "UNTRAINED" in human.stdout


@pytest.fixture
def mixed_inputs(tmp_path, contents):
    """A directory with two good photos and the bad inputs of the issue's list."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(contents[0], d / "good1.jpg")
    shutil.copy(contents[1], d / "good2.jpg")
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    data = contents[2].read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    cv2.imwrite(str(d / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    side = 20_000  # 400 MP: over the 250 MP default, refused before decoding
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", side, side)
    (d / "huge.png").write_bytes(header + b"\x08\x02\x00\x00\x00" + b"\0" * 4 + b"IEND")
    return d


def test_bad_files_are_reported_and_the_rest_written(small_bundle, styles, mixed_inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli(
        "stylize",
        mixed_inputs,
        "-m",
        small_bundle,
        "-s",
        styles[0],
        "-o",
        out,
        "--max-size",
        "96",
        "--json",
    )
    assert proc.returncode == 1
    results = {r["input"].split("/")[-1]: r for r in json.loads(proc.stdout)["results"]}
    assert results["good1.jpg"]["error"] is None and results["good2.jpg"]["error"] is None
    assert "empty" in results["empty.jpg"]["error"]
    assert "not a readable image" in results["text.jpg"]["error"]
    assert "truncated" in results["truncated.jpg"]["error"]
    assert "at least 16 px" in results["tiny.png"]["error"]
    assert "MP limit" in results["huge.png"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["good1_stylized.jpg", "good2_stylized.jpg"]


def test_exif_rotated_photo_is_stylized_upright(small_bundle, styles, tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)
    (tmp_path / "rot.jpg").write_bytes(jpeg_with_orientation(img, 6))
    proc = run_cli(
        "stylize", tmp_path / "rot.jpg", "-m", small_bundle, "-s", styles[0], "-o", tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert cv2.imread(str(tmp_path / "rot_stylized.jpg")).shape[:2] == (80, 40)


def test_output_equal_to_input_is_refused(small_bundle, styles, contents, tmp_path):
    src = tmp_path / "photo.jpg"
    shutil.copy(contents[0], src)
    before = src.read_bytes()
    proc = run_cli(
        "stylize", src, "-m", small_bundle, "-s", styles[0], "-o", tmp_path, "--suffix", ""
    )
    assert proc.returncode == 1 and "would overwrite an input" in proc.stderr
    assert src.read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jpg"], "no such file"),
        (["."], "no images found"),
    ],
)
def test_missing_inputs(small_bundle, styles, tmp_path, args, message):
    proc = run_cli(
        "stylize", *args, "-m", small_bundle, "-s", styles[0], "-o", tmp_path, cwd=tmp_path
    )
    assert proc.returncode == 1 and message in proc.stderr


def test_unwritable_output_directory(small_bundle, styles, contents, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    proc = run_cli("stylize", contents[0], "-m", small_bundle, "-s", styles[0], "-o", target)
    _one_line_error(proc, "is a file")
    proc = run_cli("stylize", contents[0], "-m", small_bundle, "-s", styles[0], "-o", "/proc")
    assert proc.returncode == 1 and "/proc" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*stylized*"))


def test_bad_style_and_bundle(small_bundle, bundle_copy, contents, tmp_path):
    (tmp_path / "style.jpg").write_text("not an image")
    proc = run_cli(
        "stylize", contents[0], "-m", small_bundle, "-s", tmp_path / "style.jpg", "-o", tmp_path
    )
    assert proc.returncode == 1 and "not a readable image" in proc.stderr
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["files"]["fused.onnx"] = "0" * 64
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    proc = run_cli("stylize", contents[0], "-m", bundle_copy, "-s", contents[1], "-o", tmp_path)
    _one_line_error(proc, "does not match its sha256")


def test_export_with_a_missing_tensor_names_it(small_checkpoint, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(small_checkpoint)
    del tensors["encoder.conv4.bias"]
    save_file(tensors, tmp_path / "broken.safetensors")
    shutil.copy(small_checkpoint.with_suffix(".json"), tmp_path / "broken.json")
    proc = run_cli("export", tmp_path / "broken", "-o", tmp_path / "b.stvae")
    _one_line_error(proc, "encoder.conv4.bias")
    assert not (tmp_path / "b.stvae").exists()


def test_import_refuses_pickled_code(tmp_path):
    pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    write_pickled_code(tmp_path / "vgg_r41.pth", "conv1.weight", marker)
    proc = run_cli(
        "import",
        "stvae",
        "--encoder",
        tmp_path / "vgg_r41.pth",
        "--decoder",
        tmp_path / "x.pth",
        "--matrix",
        tmp_path / "y.pth",
        "-o",
        tmp_path / "out",
    )
    _one_line_error(proc, "refused")
    assert not marker.exists() and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    "family, init_args",
    [
        ("stvae", ["--set", "z_dim=32", "--vgg", "random:1"]),
        ("vqvae", ["--set", "codebook_size=128", "--seed", "1"]),
    ],
)
def test_init_export_stylize_round_trip(tmp_path, contents, styles, family, init_args):
    proc = run_cli("init", family, "--width", "0.125", *init_args, "-o", tmp_path / "tiny")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("export", tmp_path / "tiny", "-o", tmp_path / f"tiny.{family}", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parity"]["passed"]
    proc = run_cli(
        "stylize",
        contents[3],
        "-m",
        tmp_path / f"tiny.{family}",
        "-s",
        styles[0],
        "-s",
        styles[1],
        "--weights",
        "0.7,0.3",
        "--alpha",
        "0.8",
        "--preserve-color",
        "-o",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / f"{contents[3].stem}_stylized.jpg").is_file()
    if family == "stvae":
        proc = run_cli("init", "stvae", "-o", tmp_path / "nov")
        _one_line_error(proc, "no VGG-19 weights")


def test_demo_writes_a_contact_sheet_and_a_clip(small_bundle, tmp_path):
    proc = run_cli("demo", "-m", small_bundle, "--out", tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    (run,) = result["bundles"]
    clip = result["clip"]
    cap = cv2.VideoCapture(clip["output"])
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 36
    assert 0 <= clip["flicker_with"] <= clip["flicker_without"]  # the reduction: test_video
    assert run["untrained"] and len(run["outputs"]) == 20 and run["ms_per_image"] > 0
    assert all(Path(p).is_relative_to(tmp_path / "stylized") for p in run["outputs"])
    sheet = cv2.imread(run["contact_sheet"])
    assert sheet is not None and sheet.shape[0] > 5 * 192  # six rows of cells
    human = run_cli("demo", "-m", small_bundle, "--out", tmp_path)
    assert "UNTRAINED" in human.stdout and "ms per image" in human.stdout


def test_missing_output_directories_are_created(small_bundle, styles, contents, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in contents[:2]:
        shutil.copy(src, photos)
    out = tmp_path / "build" / "out"
    proc = run_cli(
        "stylize", photos, "-m", small_bundle, "-s", styles[0], "-o", out, "--max-size", "64"
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{c.stem}_stylized{c.suffix}" for c in contents[:2]
    )
    proc = run_cli("init", "vqvae", "--width", "0.125", "-o", tmp_path / "new" / "dir" / "tiny")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new" / "dir" / "tiny.safetensors").is_file()


def test_one_image_goes_to_the_named_file(small_bundle, styles, contents, tmp_path):
    target = tmp_path / "sub" / "result.png"
    proc = run_cli(
        "stylize",
        contents[0],
        "-m",
        small_bundle,
        "-s",
        styles[0],
        "-o",
        target,
        "--max-size",
        "64",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote: {target}"
    img = cv2.imread(str(target))
    assert img is not None and max(img.shape[:2]) == 64
    proc = run_cli("stylize", *contents[:2], "-m", small_bundle, "-s", styles[0], "-o", target)
    _one_line_error(proc, "takes one image, but 2 images were given")


def _pipe(args: list, data: bytes) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "styleship", *map(str, args)]
    return subprocess.run(cmd, input=data, capture_output=True, cwd=ROOT, timeout=300)


def test_standard_input_to_standard_output(small_bundle, styles, contents, tmp_path):
    opts = ["-m", small_bundle, "-s", styles[0], "--max-size", "64"]
    proc = run_cli("stylize", contents[0], *opts, "-o", tmp_path / "ref.png")
    assert proc.returncode == 0, proc.stderr
    piped = _pipe(["stylize", "-", *opts, "-o", "-"], contents[0].read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (tmp_path / "ref.png").read_bytes()  # the image and nothing else
    jpeg = _pipe(["stylize", "-", *opts, "-o", "-", "--format", "jpg"], contents[0].read_bytes())
    assert jpeg.stdout[:2] == b"\xff\xd8" and jpeg.stdout.endswith(b"\xff\xd9")
    empty = _pipe(["stylize", "-", *opts, "-o", "-"], b"")
    assert empty.returncode == 1 and empty.stdout == b""
    assert empty.stderr.decode().strip() == "error: standard input is empty"


def test_a_style_that_is_no_file_is_one_line(small_bundle, contents, tmp_path):
    proc = run_cli(
        "stylize", contents[0], "-m", small_bundle, "-s", "no-such-style", "-o", tmp_path
    )
    _one_line_error(proc, "no-such-style")
    assert len(proc.stderr.strip().splitlines()) == 1


def _png(width: int, height: int, with_pixels: bool) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    data = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    )
    if with_pixels:
        data += chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * max(width, 1)) * height))
    return data + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "width, with_pixels, message",
    [
        (0, True, "its header says 0×16 pixels"),  # libpng would print its own two lines
        (0, False, "its header says 0×16 pixels"),
        (16, False, "not a readable image"),  # OpenCV's logger would print a WARN line
    ],
)
def test_a_malformed_png_gives_exactly_one_line(
    small_bundle, styles, tmp_path, width, with_pixels, message
):
    bad = tmp_path / "bad.png"
    bad.write_bytes(_png(width, 16, with_pixels))
    proc = run_cli("stylize", bad, "-m", small_bundle, "-s", styles[0], "-o", tmp_path / "out")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad} ") and message in lines[0], lines


def test_doctor_prints_bracketed_text_as_is():
    """rich took `[gpu]` in "pip install 'styleship[gpu]'" for markup and printed nothing of it."""
    from styleship.doctor import diagnose

    expected = [v for v in diagnose().values() if isinstance(v, str) and "styleship[" in v]
    if not expected:
        pytest.skip("TensorRT and PyTriton are both installed: no install hint to print")
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "styleship", "doctor"], capture_output=True, text=True, env=env
    )
    for hint in expected:
        assert hint in proc.stdout, proc.stdout


def test_tables_and_lines_print_bracketed_paths_as_is(tmp_path):
    """Every table and "wrote" line is plain text: `inspect` of a bundle in a folder named
    with brackets showed the path with them cut out."""
    bundle = tmp_path / "demo[v2].stvae"
    shutil.copytree(ROOT / "assets/models/stvae-demo.stvae", bundle)
    env = {**os.environ, "COLUMNS": "300"}
    proc = subprocess.run(
        [sys.executable, "-m", "styleship", "inspect", str(bundle)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0 and "demo[v2].stvae" in proc.stdout, proc.stdout
