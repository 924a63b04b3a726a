"""Memory facts for `tile="auto"`: what an engine needs per pixel, and what the host has.

Bytes per pixel are measured, not guessed: a fresh process loads the engine,
runs it once at 64² (allocators and thread pools warm), then resets its peak
RSS (Linux `/proc/self/clear_refs`) and runs at `side`²; the peak's growth over
the pixels is the figure. A fresh process, because a warm one reuses freed
memory and would under-count. It includes the constant part of one run, so it
over-counts a little, which is the safe side. Export records the ONNX Runtime
CPU figure in the manifest (`memory`); other engines are measured on first use
and cached beside the style cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

MULTIPLE = 8  # image sides pad to this (runtime/image.py)
MIN_TILE = 256  # the smallest tile `auto` picks

MEASURE_SIDE = 1024
DEFAULT_FRACTION = 0.5  # of available memory, when no budget is given
# Image buffers besides the engine, per pixel: decoded 8-bit, float RGB, padded copy,
# result, cropped/coloured copy, 8-bit for encoding.
IMAGE_BYTES_PER_PIXEL = 60
# Images that would fit at this many engine bytes per pixel run untiled without a measurement
# (the shipped models need 300-450).
SMALL_BOUND = 4096
FALLBACK_BYTES_PER_PIXEL = 2048  # when the engine cannot be measured


def padded_pixels(width: int, height: int) -> int:
    """Pixels the engine sees for a width × height image, its sides padded to MULTIPLE."""
    return (-(-width // MULTIPLE) * MULTIPLE) * (-(-height // MULTIPLE) * MULTIPLE)


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident set size of this process while the block runs.

    On Linux this is the kernel's own high-water mark (VmHWM), reset at the
    start by writing 5 to /proc/self/clear_refs: exact, and free, whereas a
    polling thread would steal time from the engine on a small machine.
    Elsewhere it falls back to psutil's current RSS at the start and end.
    """

    def __init__(self) -> None:
        self.peak = 0
        self.start = 0

    def __enter__(self) -> PeakMemory:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self.peak = self.start = self._now()
        return self

    def __exit__(self, *exc) -> None:
        hwm = _status_kib("VmHWM")
        self.peak = max(self.peak, hwm * 1024 if hwm is not None else self._now())

    @staticmethod
    def _now() -> int:
        rss = _status_kib("VmRSS")
        if rss is not None:
            return rss * 1024
        import psutil  # off Linux only; the bench extra installs it

        return psutil.Process(os.getpid()).memory_info().rss

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    @property
    def growth_mib(self) -> float:
        """How far the peak rose above the resident size at the start of the block."""
        return (self.peak - self.start) / 2**20


def available_bytes() -> int:
    """Memory the system can give without swapping (MemAvailable), or total RAM."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budget() -> int:
    return int(available_bytes() * DEFAULT_FRACTION)


def _measure_here(bundle: str, backend: str, precision: str, side: int) -> dict:
    """In this (fresh) process: the stylizer graph's peak RSS growth per pixel at side²."""
    from styleship.runtime.backends import create_backend
    from styleship.runtime.bundle import Bundle
    from styleship.runtime.choice import probe_feed

    b = Bundle.load(bundle)
    engine = create_backend(backend)
    engine.load(b, "stylizer", precision=precision)

    engine.run(probe_feed(engine, 64))
    big = probe_feed(engine, side)
    with PeakMemory() as mem:
        engine.run(big)
    engine.close()
    return {
        "bytes_per_pixel": round((mem.peak - mem.start) / side**2, 1),
        "backend": backend,
        "precision": precision,
        "side": side,
        "method": "peak RSS growth of one run in a fresh process",
    }


def measure(bundle: str | os.PathLike, backend: str, precision: str, side: int = MEASURE_SIDE):
    """The engine's bytes per pixel, measured in a fresh process; None if it cannot be."""
    cmd = [sys.executable, "-m", "styleship.runtime.memory", os.fspath(bundle), backend, precision]
    try:
        done = subprocess.run(
            [*cmd, str(side)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def engine_bytes_per_pixel(bundle, backend: str, precision: str) -> tuple[float | None, str]:
    """(bytes per pixel, where the figure came from) for the stylizer on this engine."""
    rec = bundle.record("memory")
    if rec.get("backend") == backend and rec.get("precision") == precision:
        return float(rec["bytes_per_pixel"]), "bundle manifest"
    from styleship.runtime.style_cache import default_cache_dir

    cache = default_cache_dir().parent / "memory" / f"{bundle.hash[:16]}-{backend}-{precision}.json"
    try:
        return float(json.loads(cache.read_text())["bytes_per_pixel"]), "measured (cached)"
    except (OSError, ValueError, KeyError):
        pass
    rec = measure(bundle.path, backend, precision)
    if rec is None:
        return None, "could not be measured"
    try:
        from styleship import _atomic

        _atomic.write_text(cache, json.dumps(rec) + "\n")
    except Exception:  # a cache we cannot write only costs a re-measurement
        pass
    return float(rec["bytes_per_pixel"]), "measured now"


def auto_tile(
    height: int,
    width: int,
    budget: int | None,
    bytes_per_pixel: Callable[[], tuple[float | None, str]],
    halo: int,
) -> dict:
    """`tile="auto"`: None (untiled) when the untiled run fits `budget` bytes, else the
    largest tile (a multiple of 256) whose run, halo included, fits beside the image buffers.

    `bytes_per_pixel` is only called for images too large to fit at SMALL_BOUND.
    """
    pixels = padded_pixels(width, height)
    budget = budget or default_budget()
    record: dict = {"budget_bytes": int(budget), "pixels": pixels}
    if pixels * (IMAGE_BYTES_PER_PIXEL + SMALL_BOUND) <= budget:
        reason = f"fits: it would even at {SMALL_BOUND} bytes per pixel"
        return {"tile": None, **record, "reason": reason}
    bpp, source = bytes_per_pixel()
    if bpp is None:
        bpp, source = FALLBACK_BYTES_PER_PIXEL, f"assumed ({source})"
    need = (bpp + IMAGE_BYTES_PER_PIXEL) * pixels
    record |= {
        "bytes_per_pixel": bpp,
        "bytes_per_pixel_source": source,
        "estimate_bytes": int(need),
    }
    gib = 2.0**30
    if need <= budget:
        reason = f"fits: about {need / gib:.1f} of the {budget / gib:.1f} GiB budget"
        return {"tile": None, **record, "reason": reason}
    room = max(budget - IMAGE_BYTES_PER_PIXEL * pixels, 0)
    side = max(MIN_TILE, (int(np.sqrt(room / bpp)) - 2 * halo) // 256 * 256)
    reason = f"untiled needs about {need / gib:.1f} GiB, over the {budget / gib:.1f} GiB budget"
    return {"tile": side, **record, "reason": reason}


if __name__ == "__main__":
    path, be, prec = sys.argv[1:4]
    print(json.dumps(_measure_here(path, be, prec, int(sys.argv[4]))))
