"""The work one actor does: decode, stylize (same-size images in one engine run), write.

`StylizeWorker` holds one `Stylizer` for its life; Ray Data constructs one per
actor and calls it with batches of rows (`input` and `output` columns). It is
plain Python, so tests call it without Ray. Every failure of one file (a
missing or corrupt image, one that is too small or too large) is that file's
error row; only a failure to load the bundle or its style stops the actor.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from styleship import _atomic
from styleship.batch.table import COLUMNS, Row
from styleship.errors import StyleshipError
from styleship.runtime import image as im
from styleship.runtime.stylizer import Job, Stylizer

# Larger images are not batched: each goes alone through `Stylizer.stylize`, which
# tiles it when the untiled run would not fit in memory.
BATCH_MAX_PIXELS = 4_000_000


def pin_cores(ledger, threads: int) -> list[int] | None:
    """Restrict this process to `threads` cores of its node that no other actor holds.

    The engines size their thread pools from the process's CPU affinity
    (`ort.cpu_threads`), so two actors on one machine share the cores instead
    of each spinning a pool over all of them. The ledger is a Ray actor that
    hands out disjoint cores per node; without one nothing is pinned.
    """
    if ledger is None or not hasattr(os, "sched_setaffinity"):
        return None
    import ray

    node = ray.get_runtime_context().get_node_id()
    available = sorted(os.sched_getaffinity(0))
    cores = ray.get(ledger.claim.remote(node, available, threads))
    os.sched_setaffinity(0, cores)
    return cores


class StylizeWorker:
    """One actor's Stylizer, called with batches of rows by Ray Data (or directly)."""

    def __init__(
        self,
        bundle: str,
        style: bytes | str | None,
        options: dict,
        backend: str | None = None,
        precision: str | None = None,
        max_pixels: int = im.DEFAULT_MAX_PIXELS,
        max_batch: int = 8,
        ledger=None,
        threads: int | None = None,
    ) -> None:
        self.cores = pin_cores(ledger, threads) if threads else None
        self.stylizer = Stylizer(
            bundle, backend, precision=precision, cache_dir=None, max_pixels=max_pixels
        )
        self.style = style
        self.code = self.stylizer.mixed_code([style] if style is not None else [])
        self.alpha = float(options.get("alpha", 1.0))
        self.preserve_color = bool(options.get("preserve_color", False))
        self.max_size = options.get("max_size")
        self.max_batch = max_batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = self.run([str(x) for x in batch["input"]], [str(x) for x in batch["output"]])
        return {c: np.array([getattr(r, c) for r in rows], dtype=object) for c in COLUMNS}

    def _decode(self, src: str) -> im.Image:
        img = im.read_image(src, self.stylizer.max_pixels)
        if self.max_size:
            img = im.Image(im.resize_max_side(img.rgb, self.max_size), img.alpha, img.bit_depth)
        im.check_min_size(img.rgb, "content image")
        return img

    def _write(self, row: Row, target: str, result: im.Image, spent_s: float) -> None:
        started = time.perf_counter()
        data = im.encode(result, Path(target).suffix.lower())
        _atomic.write_bytes(target, data)
        h, w = result.rgb.shape[:2]
        row.output, row.size, row.status = target, f"{w}x{h}", "ok"
        row.output_sha256 = hashlib.sha256(data).hexdigest()
        row.time_ms = (spent_s + time.perf_counter() - started) * 1000

    def run(self, inputs: Sequence[str], outputs: Sequence[str]) -> list[Row]:
        """Stylize these files into these paths; one row each, errors included."""
        from styleship.batch.table import stamp

        rows = [Row(src, input_stamp=stamp(Path(src))) for src in inputs]
        decoded: list[tuple[int, im.Image, float]] = []
        for i, src in enumerate(inputs):
            started = time.perf_counter()
            try:
                decoded.append((i, self._decode(src), time.perf_counter() - started))
            except (StyleshipError, OSError) as exc:
                self._fail(rows[i], exc, time.perf_counter() - started)
        small, large = [], []
        for item in decoded:
            h, w = item[1].rgb.shape[:2]
            (small if h * w <= BATCH_MAX_PIXELS else large).append(item)
        if small:
            self._batched(small, rows, outputs)
        for i, img, spent in large:  # one at a time, tiled where memory calls for it
            self._single(i, img, spent, rows, outputs)
        return rows

    def _batched(self, items, rows: list[Row], outputs: Sequence[str]) -> None:
        jobs = [Job(img, self.code, self.alpha, self.preserve_color) for _, img, _ in items]
        started = time.perf_counter()
        try:
            results = self.stylizer.stylize_batch(jobs, self.max_batch)
        except StyleshipError:  # find the one to blame: each image on its own
            for i, img, spent in items:
                self._single(i, img, spent, rows, outputs)
            return
        share = (time.perf_counter() - started) / len(items)
        for (i, _, spent), result in zip(items, results):
            try:
                self._write(rows[i], outputs[i], result, spent + share)
            except (StyleshipError, OSError) as exc:
                self._fail(rows[i], exc, spent + share)

    def _single(self, i: int, img: im.Image, spent: float, rows, outputs) -> None:
        started = time.perf_counter()
        try:
            if img.rgb.shape[0] * img.rgb.shape[1] > BATCH_MAX_PIXELS:
                result = self.stylizer.stylize(
                    img, self.style, alpha=self.alpha, preserve_color=self.preserve_color
                )
            else:
                job = Job(img, self.code, self.alpha, self.preserve_color)
                result = self.stylizer.stylize_batch([job])[0]
            self._write(rows[i], outputs[i], result, spent + time.perf_counter() - started)
        except (StyleshipError, OSError) as exc:
            self._fail(rows[i], exc, spent + time.perf_counter() - started)

    @staticmethod
    def _fail(row: Row, exc: Exception, spent_s: float) -> None:
        text = str(exc) if isinstance(exc, StyleshipError) else f"{exc.strerror or exc}"
        row.status, row.error, row.time_ms = "error", text.splitlines()[0], spent_s * 1000
