"""`Stylizer`: the public API. Images in, stylized images out, on any backend.

It reads everything it needs from the bundle manifest (graph I/O, input
kinds, style-code mixing rules), so a new model family needs no change here.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from styleship.errors import InputError, StyleshipError
from styleship.runtime import arrays, exact_tiling, tiling
from styleship.runtime import image as im
from styleship.runtime.backends import create_backend, default_device
from styleship.runtime.bundle import Bundle
from styleship.runtime.choice import Choice, choose
from styleship.runtime.engines import check_stylizer_engines
from styleship.runtime.files import stylize_files
from styleship.runtime.style_bank import parse_spec
from styleship.runtime.style_cache import StyleCache, default_cache_dir
from styleship.runtime.styles import mix_codes, unknown_style
from styleship.runtime.tiled import TilingMixin

# A file path, encoded bytes, a decoded Image, or an HWC array (runtime/arrays.py).
Source = str | os.PathLike | bytes | im.Image | np.ndarray
_DEFAULT = object()


@dataclass
class Job:
    """One image to stylize: the decoded content, its style code and options."""

    image: im.Image
    code: dict[str, np.ndarray]
    alpha: float = 1.0
    preserve_color: bool = False


def _key(src: Source) -> str:
    if isinstance(src, im.Image):
        return hashlib.sha256(np.ascontiguousarray(src.rgb).tobytes()).hexdigest()
    if isinstance(src, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(src).tobytes()).hexdigest()
    data = src if isinstance(src, bytes) else im.read_bytes(src)
    return hashlib.sha256(data).hexdigest()


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """One batch from per-image arrays; a batch of one is the array itself, not a copy."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


class Stylizer(TilingMixin):
    """Stylize images with a bundle: `Stylizer("starry.stvae").stylize("photo.jpg", "art.jpg")`.

    `backend` and `precision` None (or "auto") take the fastest pair this machine
    runs that the bundle's quality records clear, measured once per machine and
    cached (runtime/choice.py); `choice` says what was picked and why. Naming
    one narrows the choice to it; naming both skips the measurement.
    `log` receives a line whenever a measurement runs.
    """

    def __init__(
        self,
        bundle: str | os.PathLike | Bundle,
        backend: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        style_size: int = 512,
        cache_dir: Path | object | None = _DEFAULT,
        max_pixels: int = im.DEFAULT_MAX_PIXELS,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        backend = None if backend == "auto" else backend
        precision = None if precision == "auto" else precision
        self.choice: Choice = choose(self.bundle, backend, precision, log=log)
        self.backend_name = self.choice.backend
        self.device = device or default_device(self.backend_name)
        self.precision = self.choice.precision
        self.style_size = style_size
        self.max_pixels = max_pixels
        directory = default_cache_dir() if cache_dir is _DEFAULT else cache_dir
        self.cache = StyleCache(self.bundle.hash, directory)
        # Opened on first use: a bank style or a cached code never needs the encoder, and
        # compiling it is a fifth of a short run's start-up (OpenVINO, Magenta).
        self._encoder = None
        self._encoder_lock = threading.Lock()
        self._stylizer = self._open("stylizer")
        self._image_output = self.bundle.graph("stylizer").image_output
        self._split = exact_tiling.SplitPlan.from_manifest(self.bundle.manifest)
        self._split_engines: dict | None = None
        self._split_error: str | None = None
        # How the last `stylize` call tiled and why (mode, tile, reason, memory figures).
        self.last_tiling: dict = {}
        self.check_engines()

    def _open(self, graph: str, memory_arena: bool = True):
        """A loaded engine for one graph; `memory_arena=False` asks engines that keep a
        memory arena (ONNX Runtime CPU) to return memory after each run instead."""
        backend = create_backend(self.backend_name)
        if hasattr(backend, "memory_arena"):
            backend.memory_arena = memory_arena
        backend.load(self.bundle, graph, self.device, self.precision)
        return backend

    def check_engines(self, max_batch: int = 1, max_side: int | None = None) -> None:
        """Refuse now, closed and in one line, engines that cannot take the style at
        `style_size` or `max_batch` contents of sides up to `max_side` (engines.py)."""
        try:
            check_stylizer_engines(self, max_batch, max_side)
        except StyleshipError:
            self.close()
            raise

    @property
    def engine(self):
        """The loaded backend that runs the stylizer graph: the benchmark times its compute
        calls between end-to-end calls on the same instance."""
        return self._stylizer

    def close(self) -> None:
        if self._encoder:
            self._encoder.close()
            self._encoder = None
        self._stylizer.close()
        for engine in (self._split_engines or {}).values():
            engine.close()
        self._split_engines = None

    def __enter__(self) -> Stylizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _image(self, src: Source, channels: str = "RGB") -> im.Image:
        if isinstance(src, im.Image):
            return src
        if isinstance(src, np.ndarray):
            return arrays.to_image(src, channels)
        return im.read_image(src, self.max_pixels)

    def style_id(self, style: Source) -> str:
        """The id a style is cached under: the sha256 of its file bytes (or pixels), or the
        bank name (or weighted names) itself."""
        if self._named(style) is not None:
            return os.fspath(style)
        return _key(style)

    def cached_code(self, style_id: str) -> dict[str, np.ndarray] | None:
        """The code of a bank style (by name, weighted names, or its painting's id) or of a
        style seen before (by this process or the disk cache), else None."""
        named = self._named(style_id)
        if named is not None:
            return named
        name = self.bundle.style_bank.by_source(style_id, self.style_size)
        if name is not None:
            return self.bundle.style_bank.code(name)
        return self.cache.get(f"{style_id}-{self.style_size}", tuple(self.bundle.style_code))

    def _named(self, style: Source) -> dict[str, np.ndarray] | None:
        """The code of a bank name or of weighted names ("a:0.7,b:0.3"), or None when
        `style` is not one (an image, bytes, an existing file, or no bank)."""
        if isinstance(style, bytes | im.Image | np.ndarray):
            return None
        bank = self.bundle.style_bank
        spec = parse_spec(os.fspath(style))
        if not bank.names or spec is None or any(n not in bank for n, _ in spec):
            return None
        if len(spec) == 1:
            return bank.code(spec[0][0])
        return mix_codes(
            [bank.code(n) for n, _ in spec], [w for _, w in spec], self.bundle.style_code
        )

    def style_code(self, style: Source) -> dict[str, np.ndarray]:
        """The style code of one image or bank style (batch of 1), cached once computed."""
        named = self._named(style)
        if named is not None:
            return named
        is_path = isinstance(style, str | os.PathLike)
        if is_path and not Path(style).is_file():
            raise unknown_style(self.bundle, style)
        if not self.bundle.has_style_input:
            names = ", ".join(self.bundle.style_bank.names)
            raise InputError(
                f"{self.bundle.name} has no style encoder: it takes no style image"
                + (f"; name one of its styles ({names})" if names else "")
            )
        style_id = self.style_id(style)
        code = self.cached_code(style_id)
        if code is not None:
            return code
        code = self._encode(self._image(style).rgb, "style image")
        self.cache.put(f"{style_id}-{self.style_size}", code)
        return code

    def _encode(self, rgb: np.ndarray, label: str) -> dict[str, np.ndarray]:
        """Run the style encoder on an image, shrunk to the style size (not cached)."""
        rgb = im.resize_max_side(rgb, self.style_size)
        im.check_min_size(rgb, label)
        padded = im.pad_to_multiple(rgb, self.bundle.style_multiple)
        encoder = self.open_encoder()
        return encoder.run(self._feed(encoder, {"style": im.to_nchw(padded)}))

    def open_encoder(self):
        """The style encoder's engine, opened on first use (or by an engine check)."""
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = self._open("style_encoder")
        return self._encoder

    def mixed_code(
        self, styles: Sequence[Source], weights: Sequence[float] | None = None
    ) -> dict[str, np.ndarray]:
        """The code of one style, or the weighted mix of several; {} for wrapped models."""
        if not styles and self.bundle.style_code:
            bank = self.bundle.style_bank.names
            raise InputError(
                "give a style image" + (f" or a bank style ({', '.join(bank)})" if bank else "")
            )
        codes = [self.style_code(s) for s in styles]
        if not codes:
            return {}
        if len(codes) == 1 and weights is None:
            return codes[0]
        return mix_codes(codes, weights or [1.0] * len(codes), self.bundle.style_code)

    def _feed(self, backend, by_kind: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Map values by input kind (content, style, strength) or code name onto input names."""
        return {name: by_kind[spec.value_key] for name, spec in backend.inputs().items()}

    def stylize(
        self,
        content: Source,
        style: Source | None = None,
        *,
        styles: Sequence[Source] = (),
        weights: Sequence[float] | None = None,
        alpha: float = 1.0,
        preserve_color: bool = False,
        max_size: int | None = None,
        tile: int | str | None = "auto",
        overlap: int = tiling.DEFAULT_OVERLAP,
        max_memory: int | None = None,
        channels: str = "RGB",
    ) -> im.Image | np.ndarray:
        """Stylize one image with one style, or a weighted mix of `styles`.

        Content and styles are files, encoded bytes, `Image`s or numpy arrays:
        height × width × 3 (× 4 with alpha, or gray), uint8, uint16 or float in
        [0, 1], in `channels` order ("RGB", or "BGR" as OpenCV holds them). An
        array content gives back an array of the same layout, dtype and channel
        order; any other content gives an `Image` (RGB float32).

        `tile`: a tile side in pixels, None or 0 for never, or "auto" to tile only
        when the untiled run would not fit `max_memory` bytes (default: a fraction
        of the memory available now; runtime/memory.py). Bundles with an exact
        split stream whole-image statistics over the tiles (runtime/exact_tiling.py)
        and `overlap` is not used; others blend overlapping tiles (runtime/tiling.py).
        `last_tiling` then says which it did and why.
        """
        sources = [
            arrays.to_image(s, channels, "style") if isinstance(s, np.ndarray) else s
            for s in ([style] if style is not None else []) + list(styles)
        ]
        code = self.mixed_code(sources, weights)
        img = self._image(content, channels)
        if max_size is not None:
            img = im.Image(im.resize_max_side(img.rgb, max_size), img.alpha, img.bit_depth)
        result = self._stylize_one(Job(img, code, alpha, preserve_color), tile, overlap, max_memory)
        if isinstance(content, np.ndarray):
            return arrays.from_image(result, content, channels)
        return result

    def _stylize_one(self, job: Job, tile, overlap: int, max_memory: int | None) -> im.Image:
        """One decoded job, untiled or in tiles as `_tiling` decides."""
        img, code, alpha = job.image, job.code, job.alpha
        decision = self._tiling(img, tile, max_memory)
        self.last_tiling = decision
        if decision["mode"] == "untiled":
            return self.stylize_batch([job])[0]
        side = decision["tile"]
        if decision["mode"] == "exact":
            return self._stylize_exact(job, side)
        tiling.check_tiling(side, overlap, im.MULTIPLE)

        def run(tiles: Sequence[np.ndarray]) -> list[np.ndarray]:
            jobs = [Job(im.Image(t), code, alpha) for t in tiles]
            return [r.rgb for r in self.stylize_batch(jobs)]

        return self._finish(job, tiling.stylize_tiled(img.rgb, run, side, overlap))

    def stylize_batch(self, jobs: Sequence[Job], max_batch: int = 16) -> list[im.Image]:
        """Stylize decoded images, each with its own code and options, in as few runs as can be.

        Images that pad to the same size run together (up to `max_batch` at a
        time): this is what the server's dynamic batching and video frames use.
        """
        jobs = [self._checked(job) for job in jobs]
        rule = self.bundle.strength_rule
        fixed = self.bundle.fixed_size
        # Each padded (or resized) copy lives only until its NCHW copy is made: at 1 MP
        # it is 12 MB that would otherwise sit beside the engine's buffers during the run.
        if fixed:  # a graph that takes one size: resize in, and back out in _finish
            size = (fixed[1], fixed[0])
            inputs = [
                im.to_nchw(cv2.resize(j.image.rgb, size, interpolation=cv2.INTER_AREA))
                for j in jobs
            ]
        else:
            inputs = [im.to_nchw(im.pad_to_multiple(job.image.rgb)) for job in jobs]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, nchw in enumerate(inputs):
            groups.setdefault(nchw.shape[2:], []).append(i)
        stylized: list[np.ndarray] = [np.empty(0)] * len(jobs)
        for members in groups.values():
            for start in range(0, len(members), max_batch):
                chunk = members[start : start + max_batch]
                values = {
                    name: _stack([jobs[i].code[name] for i in chunk])
                    for name in self.bundle.style_code
                }
                values["content"] = _stack([inputs[i] for i in chunk])
                values["strength"] = np.array([jobs[i].alpha for i in chunk], np.float32)
                out = self._stylizer.run(self._feed(self._stylizer, values))[self._image_output]
                for k, i in enumerate(chunk):
                    stylized[i] = im.from_nchw(out, k)
        blend = rule == "blend"
        return [
            self._finish(job, rgb, fixed is not None, blend) for job, rgb in zip(jobs, stylized)
        ]

    def _checked(self, job: Job) -> Job:
        """A job ready to run: strength and size checked, and Magenta-style strength
        (`strength_rule == "code"`) turned into a code mix. Untiled and exact tiles share it."""
        if not 0.0 <= job.alpha <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {job.alpha}")
        im.check_min_size(job.image.rgb, "content image")
        return self._toward_content(job) if self.bundle.strength_rule == "code" else job

    def _toward_content(self, job: Job) -> Job:
        """Magenta's strength: code = α·style + (1 − α)·the content's own code, α then 1."""
        if job.alpha >= 1.0:
            return job
        own = self._encode(job.image.rgb, "content image")
        code = mix_codes([job.code, own], [job.alpha, 1.0 - job.alpha], self.bundle.style_code)
        return Job(job.image, code, 1.0, job.preserve_color)

    @staticmethod
    def _finish(job: Job, stylized: np.ndarray, resized: bool = False, blend: bool = False):
        """Crop the padding off (or undo a fixed-size resize), then apply α, colours, alpha."""
        src = job.image
        h, w = src.rgb.shape[:2]
        if resized:
            result = cv2.resize(stylized, (w, h), interpolation=cv2.INTER_CUBIC)
        else:
            result = stylized[:h, :w]
        if blend and job.alpha < 1.0:
            result = job.alpha * result + (1.0 - job.alpha) * src.rgb
        if job.preserve_color:
            result = im.preserve_color(result, src.rgb)
        alpha = src.alpha
        if alpha is not None and alpha.shape[:2] != (h, w):
            alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
        return im.Image(rgb=result, alpha=alpha, bit_depth=src.bit_depth)

    # Many files into a folder, a bad file recorded and skipped (runtime/files.py).
    stylize_files = stylize_files
