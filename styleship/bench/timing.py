"""Timing and memory: warm-up apart, per-call samples, percentiles, peak RSS.

Each call is timed on its own (`perf_counter` around a call that returns
only once the work is done: GPU backends synchronise inside the call), so
p90/p99 are real percentiles of calls, not of averaged windows (deploy.md §4).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from styleship.bench.config import Timing


@dataclass(frozen=True)
class Stats:
    """Latency statistics of one case, in milliseconds."""

    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray) -> Stats:
        """Percentiles by linear interpolation between order statistics (numpy's default)."""
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.size == 0 or not np.isfinite(x).all():
            raise ValueError("need at least one finite sample")
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        return cls(
            iterations=int(x.size),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            mean_ms=float(x.mean()),
            std_ms=float(x.std(ddof=1)) if x.size > 1 else 0.0,
            min_ms=float(x.min()),
            max_ms=float(x.max()),
        )

    def images_per_s(self, batch: int) -> float:
        """Throughput at the median: batch images per median call."""
        return batch * 1000.0 / self.p50_ms if self.p50_ms > 0 else math.inf

    def to_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], timing: Timing) -> Stats:
    """Warm up, then time single calls until both minimum count and time are met.

    Stops at `max_iterations`, or at `max_seconds` once `min_iterations` ran
    (at least one call always runs, however slow).
    """
    for _ in range(timing.warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - start
        enough = len(samples) >= timing.min_iterations and elapsed >= timing.min_seconds
        if enough or len(samples) >= timing.max_iterations:
            break
        if elapsed >= timing.max_seconds and len(samples) >= 1:
            break
    return Stats.from_samples(samples)


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

    def __enter__(self) -> PeakMemory:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self.peak = self._now()
        return self

    def __exit__(self, *exc) -> None:
        hwm = _status_kib("VmHWM")
        self.peak = max(self.peak, hwm * 1024 if hwm is not None else self._now())

    @staticmethod
    def _now() -> int:
        rss = _status_kib("VmRSS")
        if rss is not None:
            return rss * 1024
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20
