"""Cost as work grows: latency and peak memory of each model's best path against pixel count,
fitted to a line, so a user can predict the cost of an image size the suite did not run.

A feed-forward convolutional network does work in proportion to its pixels,
plus a fixed part (the style transform on a bottleneck of fixed size, thread
wake-up, the engine's own memory), so `ms = a·MP + b` and `MiB = c·MP + d` are
the natural models; R² says how well they hold. The best path of a model is
the (backend, precision) the run's summary names most often for it (the
fastest within 40 dB of fp32, 30 dB for int8, batch 1, style cached), and the points are its
compute rows at every size the run measured.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

PREDICT = {"4K UHD (3840×2160)": 3840 * 2160, "4096² (16.8 MP)": 4096 * 4096}


def fit_line(xs: list[float], ys: list[float]) -> dict | None:
    """Least-squares y = slope·x + intercept, with R²; None below two distinct x."""
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if len(set(xs)) < 2:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((residual**2).sum()) / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "points": len(xs)}


def best_paths(summary: list[dict]) -> dict[str, tuple[str, str]]:
    """Per model: the summary's most frequent best (backend, precision); ties go to the one
    named at the larger size."""
    out = {}
    for model in dict.fromkeys(s["model"] for s in summary):
        picks = sorted(
            (s for s in summary if s["model"] == model), key=lambda s: s["size"], reverse=True
        )
        counts = Counter((s["best_backend"], s["best_precision"]) for s in picks)
        top = max(counts.values())
        out[model] = next(
            (s["best_backend"], s["best_precision"])
            for s in picks
            if counts[(s["best_backend"], s["best_precision"])] == top
        )
    return out


def cost_vs_pixels(rows: list[dict], summary: list[dict]) -> list[dict]:
    """One fit per model on its best path's compute rows (batch 1, style cached)."""
    out = []
    for model, (backend, precision) in best_paths(summary).items():
        points = sorted(
            (r["size"], r["p50_ms"], r.get("peak_rss_mib"))
            for r in rows
            if r.get("status") == "ok"
            and r["model"] == model
            and (r["backend"], r["precision"]) == (backend, precision)
            and r["view"] == "compute"
            and r["batch"] == 1
            and r["style"] == "cached"
        )
        mp = [s * s / 1e6 for s, _, _ in points]
        ms = fit_line(mp, [p[1] for p in points])
        with_mem = [(m, p[2]) for m, p in zip(mp, points) if p[2] is not None]
        mib = fit_line([m for m, _ in with_mem], [v for _, v in with_mem])
        entry = {
            "model": model,
            "backend": backend,
            "precision": precision,
            "sizes": [s for s, _, _ in points],
            "ms_per_mp": ms["slope"] if ms else None,
            "ms_intercept": ms["intercept"] if ms else None,
            "ms_r2": ms["r2"] if ms else None,
            "mib_per_mp": mib["slope"] if mib else None,
            "mib_intercept": mib["intercept"] if mib else None,
            "mib_r2": mib["r2"] if mib else None,
        }
        entry["predicted"] = {
            name: {
                "ms": ms["slope"] * px / 1e6 + ms["intercept"] if ms else None,
                "mib": mib["slope"] * px / 1e6 + mib["intercept"] if mib else None,
            }
            for name, px in PREDICT.items()
        }
        out.append(entry)
    return out
