"""Timing and memory: warm-up apart, per-call samples, percentiles, peak RSS.

Each call is timed on its own (`perf_counter` around a call that returns
only once the work is done: GPU backends synchronise inside the call), so
p90/p99 are real percentiles of calls, not of averaged windows (deploy.md §4).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

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


def rss_bytes() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


class PeakMemory:
    """Peak resident set size of this process while the block runs (polled in a thread).

    `with PeakMemory() as mem: ...` then `mem.peak_mib`; polling at 5 ms
    catches allocations that live at least that long, which model
    activations do.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20
