"""Write results.csv, results.md and the plots from `results.json`; compare two runs.

Everything here reads only the results dictionary, so a committed
results.json can be re-rendered (`styleship bench --render DIR`) and two
runs compared (`styleship bench --compare A B`) without re-measuring.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from styleship import _atomic
from styleship._jsonfile import read_versioned
from styleship.bench.markdown import budgets_of, fmt, ok_rows, render_markdown
from styleship.bench.plots import write_plots
from styleship.errors import InputError

__all__ = [
    "compare",
    "fmt",
    "load_results",
    "render_csv",
    "render_markdown",
    "write_reports",
    "write_table",
]

FORMAT, FORMAT_VERSION = "styleship-bench", 1

CSV_FIELDS = (
    "method",
    "model",
    "backend",
    "precision",
    "size",
    "batch",
    "style",
    "view",
    "budget",
    "status",
    "reason",
    "iterations",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "images_per_s",
    "load_ms",
    "first_call_ms",
    "peak_rss_mib",
    "rss_growth_mib",
    "faults_per_call",
    "ms_per_call",
    "peak_device_mib",
    "ssim_content",
    "content_loss",
    "style_loss",
    "psnr_vs_fp32_db",
    "ssim_vs_fp32",
    "psnr_reference",
    "tile",
    "overlap",
    "tile_mean_abs",
    "tile_max_abs",
    "psnr_vs_untiled_db",
    "gflop_per_image",
    "achieved_gflops",
    "peak_gflops",
    "fraction_of_peak",
)


def render_csv(results: dict) -> str:
    buf = io.StringIO()
    budgets = budgets_of(results["rows"])
    fields = list(CSV_FIELDS) + [f"speedup_vs_gatys_{b}" for b in budgets]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results["rows"]:
        flat = dict(r)
        for b in budgets:
            flat[f"speedup_vs_gatys_{b}"] = (r.get("speedup_vs_gatys") or {}).get(str(b))
        writer.writerow(flat)
    return buf.getvalue()


def write_reports(results: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    _atomic.write_text(out_dir / "results.csv", render_csv(results))
    _atomic.write_text(out_dir / "results.md", render_markdown(results))
    write_plots(results, out_dir)


def write_table(out_dir: Path, stem: str, result: dict, markdown: str) -> None:
    """A benchmark script's result as STEM.json beside its table as STEM.md, both atomic."""
    out_dir = Path(out_dir)
    _atomic.ensure_dir(out_dir)
    _atomic.write_text(out_dir / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    _atomic.write_text(out_dir / f"{stem}.md", markdown)


def load_results(path: str | Path) -> dict:
    """`results.json`, or a directory holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise InputError(f"no benchmark results at {path}")
    return read_versioned(path, FORMAT, FORMAT_VERSION, "benchmark results")


KEY = ("model", "backend", "precision", "size", "batch", "style", "view", "budget")


def compare(a: dict, b: dict) -> list[dict]:
    """p50 of every case measured in both runs, and the relative change (negative: faster)."""
    index = {tuple(r.get(k) for k in KEY): r for r in ok_rows(a["rows"])}
    out = []
    for r in ok_rows(b["rows"]):
        key = tuple(r.get(k) for k in KEY)
        if key in index:
            before, after = index[key]["p50_ms"], r["p50_ms"]
            out.append(
                dict(zip(KEY, key))
                | {"a_p50_ms": before, "b_p50_ms": after, "change": after / before - 1}
            )
    return out
