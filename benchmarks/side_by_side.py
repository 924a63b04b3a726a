"""Bundles timed side by side, each on the engine `stylize` picks for it by default.

Sequential runs drift with the CPU's clock and whatever else wakes up, so a
1-2 % difference between two bundles timed minutes apart says nothing. Here
every round calls each bundle once, in turn, on the same 512x512 photo with its
style code cached, and the report gives each bundle's median over all rounds
and the per-round ratio to the first bundle (median and spread).

    python benchmarks/side_by_side.py build/train/magenta.magenta \\
        assets/models/vqvae-demo.vqvae --out benchmarks/results/distill/warm-start
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from styleship.bench.report import write_table
from styleship.runtime import image as im
from styleship.runtime.stylizer import Stylizer

STYLE = Path(__file__).resolve().parent.parent / "assets" / "heldout" / "styles"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path, help="the first is the reference")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    photo = im.Image(np.random.default_rng(0).random((args.side, args.side, 3), np.float32))
    style = sorted(STYLE.glob("*.jpg"))[0]
    stylizers = [Stylizer(b, cache_dir=None) for b in args.bundles]
    for st in stylizers:  # warm-up: the shape-specific compile happens on the third sighting
        for _ in range(5):
            st.stylize(photo, style, tile=None)
    times: list[list[float]] = [[] for _ in stylizers]
    for _ in range(args.rounds):
        for st, row in zip(stylizers, times):
            t0 = time.perf_counter()
            st.stylize(photo, style, tile=None)
            row.append(time.perf_counter() - t0)
    rows = []
    for path, st, row in zip(args.bundles, stylizers, times):
        ratios = sorted(t / r for t, r in zip(row, times[0]))
        rows.append(
            {
                "bundle": str(path),
                "engine": f"{st.backend_name} {st.precision}",
                "median_ms": 1000 * statistics.median(row),
                "ratio_to_first": {
                    "median": statistics.median(ratios),
                    "p25": ratios[len(ratios) // 4],
                    "p75": ratios[3 * len(ratios) // 4],
                },
            }
        )
        st.close()
    result = {
        "side": args.side,
        "rounds": args.rounds,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
    lines = ["| bundle | engine | median ms | ratio to first (p25-p75) |", "|---|---|---|---|"]
    for r in rows:
        q = r["ratio_to_first"]
        lines.append(
            f"| {Path(r['bundle']).name} | {r['engine']} | {r['median_ms']:.1f} | "
            f"{q['median']:.3f} ({q['p25']:.3f}-{q['p75']:.3f}) |"
        )
    write_table(args.out, "side_by_side", result, "\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
