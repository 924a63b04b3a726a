"""Video: frames in and out with OpenCV, batched through the Stylizer, optionally stabilised.

Basics:
- Frames are decoded and encoded with OpenCV (FFmpeg inside the wheel). The
  codec is chosen by the output extension, and the input's fps and size are
  kept. Audio is not carried over.
- The style code is computed once for the whole clip.
- Frames go through `Stylizer.stylize_batch` in groups, so the engine runs
  batches, not single frames.

Temporal stability (`stability` > 0) blends each stylized frame with the
previous output, guided by how much the input changed at each pixel:

    d = blur(mean_c |I_t − I_{t−1}|)           per-pixel change of the input
    w = stability · exp(−d / SIGMA)           about `stability` where static, 0 where moving
    O_t = w · O_{t−1} + (1 − w) · S_t

- Where the scene is still, the output is an exponential moving average of
  the stylizations, so frame-to-frame flicker is damped. Where the scene
  moves, the fresh stylization passes through, so nothing ghosts behind
  moving objects.
- There is no optical flow. A slow pan therefore gets little smoothing, and
  very slow changes (below SIGMA) lag by a few frames.
- The blend costs a few element-wise passes per frame: about 5 ms at 512²
  on this CPU. A flow-warped blend would cost far more.

`flicker` measures how unstable a clip is: the mean absolute difference
between consecutive output frames, over the pixels whose input did not
change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from styleship.errors import InputError
from styleship.runtime import image as im

# FFmpeg inside OpenCV prints its own complaints about unreadable files; styleship reports
# them once, as an InputError. OpenCV reads this when it first opens a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

# Output extension -> FourCC that the FFmpeg inside opencv-python-headless writes.
CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
VIDEO_EXTENSIONS = tuple(CODECS)
SIGMA = 0.03  # input change (in [0, 1] units) at which blending falls to 1/e
STATIC = 0.01  # input change below which a pixel counts as static for `flicker`


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    width: int
    height: int
    frames: int  # as the container declares it; 0 when unknown


def probe(path: str | os.PathLike) -> VideoInfo:
    """Open a video and read its header; a clear error when OpenCV cannot."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such video: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f"{path} is not a video OpenCV can read")
        info = VideoInfo(
            fps=cap.get(cv2.CAP_PROP_FPS) or 25.0,
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            frames=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
        )
    finally:
        cap.release()
    if info.width < 1 or info.height < 1:
        raise InputError(f"{path} has no video frames")
    return info


def frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """RGB float32 frames in [0, 1], one at a time."""
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    finally:
        cap.release()


class Writer:
    """Frames to a video file, written beside the target and renamed into place on close."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in CODECS:
            raise InputError(
                f"cannot write {ext or 'a file without extension'}; use one of "
                f"{', '.join(VIDEO_EXTENSIONS)}"
            )
        if not self.path.parent.is_dir():
            raise InputError(f"output directory does not exist: {self.path.parent}")
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{ext}")
        self._writer = cv2.VideoWriter(
            str(self.tmp), cv2.VideoWriter_fourcc(*CODECS[ext]), fps, size
        )
        if not self._writer.isOpened():
            raise InputError(f"OpenCV cannot encode {ext} video here")
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        bgr = cv2.cvtColor(im.to_uint8(rgb), cv2.COLOR_RGB2BGR)
        self._writer.write(bgr)
        self.count += 1

    def close(self, keep: bool = True) -> None:
        self._writer.release()
        if keep and self.count:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_frames(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Write RGB float frames (all one size) to a video file, atomically."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise InputError("no frames to write")
    writer = Writer(path, fps, (first.shape[1], first.shape[0]))
    try:
        for frame in (first, *frames):
            writer.write(frame)
    except BaseException:
        writer.close(keep=False)
        raise
    writer.close()
    return writer.path


class TemporalBlend:
    """The stability filter of the module docstring; one per clip."""

    def __init__(self, stability: float) -> None:
        if not 0.0 <= stability < 1.0:
            raise InputError(f"stability must be in [0, 1), got {stability}")
        self.stability = stability
        self._prev_in: np.ndarray | None = None
        self._prev_out: np.ndarray | None = None

    def __call__(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        if self.stability == 0.0 or self._prev_in is None:
            out = stylized
        else:
            change = np.abs(frame - self._prev_in).mean(axis=2)
            change = cv2.GaussianBlur(change, (5, 5), 0)
            w = (self.stability * np.exp(-change / SIGMA))[:, :, None]
            out = w * self._prev_out + (1.0 - w) * stylized
        self._prev_in, self._prev_out = frame, out
        return out


def flicker(inputs: list[np.ndarray], outputs: list[np.ndarray], static: float = STATIC) -> float:
    """Mean |O_t − O_{t−1}| over pixels whose input changed less than `static` (RGB in [0, 1])."""
    total, count = 0.0, 0
    for t in range(1, len(inputs)):
        mask = np.abs(inputs[t] - inputs[t - 1]).max(axis=2) < static
        if mask.any():
            diff = np.abs(outputs[t] - outputs[t - 1]).mean(axis=2)
            total += float(diff[mask].sum())
            count += int(mask.sum())
    if count == 0:
        raise InputError("no static pixels between consecutive frames: flicker is undefined")
    return total / count


def stylize_frames(
    stylizer,
    source: Iterable[np.ndarray],
    code: dict[str, np.ndarray],
    alpha: float = 1.0,
    preserve_color: bool = False,
    stability: float = 0.0,
    batch: int = 4,
) -> Iterator[np.ndarray]:
    """Stylized frames, in order, from RGB float frames; `batch` frames per engine run."""
    from styleship.runtime.stylizer import Job

    blend = TemporalBlend(stability)
    source = iter(source)
    while True:
        pending = [f for _, f in zip(range(batch), source)]
        if not pending:
            return
        jobs = [Job(im.Image(f), code, alpha, preserve_color) for f in pending]
        for frame, result in zip(pending, stylizer.stylize_batch(jobs, max_batch=batch)):
            yield blend(frame, result.rgb)


def stylize_video(
    stylizer,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    code: dict[str, np.ndarray],
    alpha: float = 1.0,
    preserve_color: bool = False,
    stability: float = 0.0,
    batch: int = 4,
    on_frame: Callable[[], None] | None = None,
) -> dict:
    """Stylize every frame of `src` into `dst` (written atomically); returns what was done."""
    info = probe(src)
    if Path(src).resolve() == Path(dst).resolve():
        raise InputError(f"output {dst} would overwrite the input")
    writer = Writer(dst, info.fps, (info.width, info.height))
    done = False
    try:
        for out in stylize_frames(
            stylizer, frames(src), code, alpha, preserve_color, stability, batch
        ):
            writer.write(out)
            if on_frame:
                on_frame()
        if writer.count == 0:
            raise InputError(f"{src} has no readable frames")
        done = True
    finally:
        writer.close(keep=done)
    return {
        "input": str(src),
        "output": str(dst),
        "frames": writer.count,
        "fps": info.fps,
        "size": [info.width, info.height],
        "stability": stability,
    }


def moving_shapes_clip(
    photo: np.ndarray, frames: int = 24, seed: int = 0, noise: float = 0.0
) -> list[np.ndarray]:
    """A test and demo clip: a still photo with a disc and a square moving across it.

    `noise` adds Gaussian sensor noise (standard deviation, in [0, 1] units) to each frame.
    """
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    r = max(4, min(h, w) // 10)
    clip = []
    for t in range(frames):
        f = photo.copy()
        x = int(r + (w - 2 * r) * t / max(frames - 1, 1))
        cv2.circle(f, (x, h // 3), r, (0.9, 0.2, 0.1), -1)
        y = int(r + (h - 2 * r) * t / max(frames - 1, 1))
        cv2.rectangle(f, (w - 3 * r, y - r // 2), (w - 2 * r, y + r // 2), (0.1, 0.3, 0.9), -1)
        if noise:
            f = np.clip(f + rng.normal(0, noise, f.shape).astype(np.float32), 0, 1)
        clip.append(f)
    return clip
