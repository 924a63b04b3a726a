"""Timing and memory: warm-up apart, per-call samples, percentiles, peak RSS, page faults.

Each call is timed on its own (`perf_counter` around a call that returns
only once the work is done: GPU backends synchronise inside the call), so
p90/p99 are real percentiles of calls, not of averaged windows (deploy.md §4).
Several functions can be measured alternately (`measure_calls`), so that a
drifting machine moves them together instead of skewing whichever ran last.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

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
    passes: int = 1
    pass_p50_ms: tuple[float, ...] = ()

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray, p99_min_samples: int = 1) -> Stats:
        """Percentiles by linear interpolation between order statistics (numpy's default).

        p99 is None below `p99_min_samples` samples: from ten calls it would
        only be the maximum under another name.
        """
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.size == 0 or not np.isfinite(x).all():
            raise ValueError("need at least one finite sample")
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        return cls(
            iterations=int(x.size),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99) if x.size >= p99_min_samples else None,
            mean_ms=float(x.mean()),
            std_ms=float(x.std(ddof=1)) if x.size > 1 else 0.0,
            min_ms=float(x.min()),
            max_ms=float(x.max()),
        )

    @classmethod
    def from_passes(cls, passes_ms: list[list[float]], p99_min_samples: int = 100) -> Stats:
        """Several passes of the same case: p50 is the median of the passes' p50s (a pass
        that met a slow spell of the machine moves it least); the rest come from all
        samples pooled."""
        passes_ms = [p for p in passes_ms if len(p)]
        pooled = cls.from_samples([x for p in passes_ms for x in p], p99_min_samples)
        p50s = tuple(float(np.median(p)) for p in passes_ms)
        return replace(pooled, p50_ms=float(np.median(p50s)), passes=len(p50s), pass_p50_ms=p50s)

    def images_per_s(self, batch: int) -> float:
        """Throughput at the median: batch images per median call."""
        return batch * 1000.0 / self.p50_ms if self.p50_ms > 0 else math.inf

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Samples:
    """One function's timed calls: milliseconds and page faults (minor + major) per call."""

    ms: list[float]
    faults: list[int]

    @property
    def faults_per_call(self) -> float:
        return float(np.mean(self.faults)) if self.faults else 0.0


def _faults() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def measure_calls(fns: dict[str, Callable[[], object]], timing: Timing) -> dict[str, Samples]:
    """Warm up each function, then call them in turn, timing every call on its own.

    Stops when every function has `min_iterations` calls and `min_seconds`
    have passed, at `max_iterations` calls each, or at `max_seconds` (each
    function always gets at least one timed call, however slow). Alternating
    keeps a machine whose speed drifts from favouring one view over another.
    """
    for _ in range(timing.warmup):
        for fn in fns.values():
            fn()
    out = {name: Samples([], []) for name in fns}
    start = time.perf_counter()
    while True:
        for name, fn in fns.items():
            f0, t0 = _faults(), time.perf_counter()
            fn()
            out[name].ms.append((time.perf_counter() - t0) * 1000.0)
            out[name].faults.append(_faults() - f0)
        count = len(next(iter(out.values())).ms)
        elapsed = time.perf_counter() - start
        enough = count >= timing.min_iterations and elapsed >= timing.min_seconds
        if enough or count >= timing.max_iterations or elapsed >= timing.max_seconds:
            return out


def measure(fn: Callable[[], object], timing: Timing) -> Stats:
    """One function, one pass: `measure_calls` for a single call site."""
    return Stats.from_samples(measure_calls({"fn": fn}, timing)["fn"].ms)
