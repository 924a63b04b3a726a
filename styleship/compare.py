"""One comparison of output tensors, shared by the export parity gate, the
cross-backend tests and the benchmark's precision quality (numpy only)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class OutputDiff:
    """How far one output is from its reference; truthy when within tolerance."""

    name: str
    max_abs: float
    mean_abs: float
    p99_abs: float
    psnr_db: float
    atol: float
    min_psnr_db: float | None  # None: PSNR not checked (not an image)

    @property
    def passed(self) -> bool:
        psnr_ok = self.min_psnr_db is None or self.psnr_db >= self.min_psnr_db
        return self.max_abs <= self.atol and psnr_ok

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        """JSON-safe: an infinite PSNR (identical outputs) becomes null."""
        d = {**asdict(self), "passed": self.passed}
        d["psnr_db"] = None if math.isinf(self.psnr_db) else round(self.psnr_db, 2)
        return d


def psnr(ref: np.ndarray, out: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, peak]; inf when equal."""
    mse = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def compare(
    ref: dict[str, np.ndarray],
    out: dict[str, np.ndarray],
    atol: float = 1e-3,
    min_psnr_db: float | None = 40.0,
) -> list[OutputDiff]:
    """Compare every output present in `ref` with the one of the same name in `out`."""
    diffs = []
    for name, r in ref.items():
        o = out[name]
        if r.shape != o.shape:
            raise ValueError(f"{name}: shape {o.shape} differs from reference {r.shape}")
        err = np.abs(r.astype(np.float64) - o.astype(np.float64))
        diffs.append(
            OutputDiff(
                name=name,
                max_abs=float(err.max()),
                mean_abs=float(err.mean()),
                p99_abs=float(np.percentile(err, 99)),
                psnr_db=psnr(r, o),
                atol=atol,
                min_psnr_db=min_psnr_db,
            )
        )
    return diffs
