"""Video: frames through the Stylizer, the temporal blend, flicker, and the CLI on a real file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import ROOT, run_cli

from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime import video
from styleship.runtime.stylizer import Stylizer

DEMO = ROOT / "assets" / "models" / "stvae-demo.stvae"


@pytest.fixture(scope="module")
def clip(contents) -> list[np.ndarray]:
    photo = cv2.resize(im.read_image(contents[1]).rgb, (128, 96), interpolation=cv2.INTER_AREA)
    return video.moving_shapes_clip(photo, frames=10)


def test_stability_mode_reduces_flicker_in_static_regions(clip, styles):
    with Stylizer(DEMO, "ort-cpu", precision="fp32", cache_dir=None) as st:
        code = st.style_code(styles[1])
        plain = list(video.stylize_frames(st, clip, code, stability=0.0))
        stable = list(video.stylize_frames(st, clip, code, stability=0.7))
    base, damped = video.flicker(clip, plain), video.flicker(clip, stable)
    # Moving shapes change the ST-VAE's whole-image content statistics, so the static
    # background flickers without the blend; the blend must cut that at least in half.
    assert base > 1.0 / 255 and damped < 0.5 * base, (base * 255, damped * 255)
    # Where the shapes move, the blend lets the fresh frame through (no ghost trail).
    moving = np.abs(clip[5] - clip[4]).max(axis=2) > 0.2
    assert np.abs(stable[5] - plain[5]).mean(axis=2)[moving].mean() < 0.02


def test_frames_are_batched_and_equal_single_image_stylization(clip, styles):
    with Stylizer(DEMO, "ort-cpu", precision="fp32", cache_dir=None) as st:
        code = st.style_code(styles[0])
        batched = list(video.stylize_frames(st, clip[:5], code, batch=4))
        single = [st.stylize(im.Image(f), styles[0]).rgb for f in clip[:5]]
    assert len(batched) == 5
    assert max(np.abs(a - b).max() for a, b in zip(batched, single)) < 1e-4


def test_cli_stylizes_a_video_file_keeping_fps_size_and_frame_count(clip, styles, tmp_path):
    src = video.write_frames(tmp_path / "clip.mp4", clip, 12.0)
    proc = run_cli(
        "stylize",
        src,
        "-m",
        DEMO,
        "-s",
        styles[0],
        "-o",
        tmp_path / "out.avi",
        "--stability",
        "0.5",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    info = video.probe(tmp_path / "out.avi")
    assert (info.width, info.height) == (128, 96) and info.fps == pytest.approx(12.0)
    assert len(list(video.frames(tmp_path / "out.avi"))) == len(clip)
    assert not list(tmp_path.glob(".*partial*"))  # the temporary file was renamed away


def test_bad_videos_get_one_line_errors(tmp_path, styles):
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    proc = run_cli("stylize", tmp_path / "fake.mp4", "-m", DEMO, "-s", styles[0], "-o", tmp_path)
    assert (
        proc.returncode == 1 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    )
    with pytest.raises(InputError, match="cannot write"):
        video.Writer(tmp_path / "out.gif", 10, (32, 32))
    with pytest.raises(InputError, match="stability"):
        video.TemporalBlend(1.0)
