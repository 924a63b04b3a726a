"""The benchmark's PNG plots (matplotlib, headless), rendered from results.json."""

from __future__ import annotations

import io
from pathlib import Path

from styleship import _atomic
from styleship.bench.markdown import PLOTS, budgets_of, ok_rows


def _label(r: dict) -> str:
    return f"{r['model']} {r['backend']} {r['precision']}"


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """The four PNGs; each is written atomically (rendered to bytes first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    ff = [r for r in ok_rows(rows, view="compute") if r["method"] != "gatys"]
    written = []

    def save(fig, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(_atomic.write_bytes(out_dir / name, buf.getvalue()))

    # 1. latency vs size, batch 1, cached; Gatys budgets dashed
    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list] = {}
    for r in ff:
        if r["batch"] == 1 and r["style"] == "cached":
            series.setdefault(_label(r), []).append((r["size"], r["p50_ms"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for b in budgets_of(rows):
        pts = sorted((r["size"], r["p50_ms"]) for r in ok_rows(rows, method="gatys", budget=b))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "k--", marker="x", alpha=0.6)
        if pts:
            ax.annotate(f"Gatys-{b}", pts[-1], fontsize=8)
    ax.set(xlabel="image side (px)", ylabel="p50 latency (ms, log)", yscale="log")
    ax.set_title("Latency vs size (batch 1, style cached)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save(fig, PLOTS[0])

    # 2. throughput vs batch, per size with more than one batch
    fig, ax = plt.subplots(figsize=(8, 5))
    series = {}
    for r in ff:
        if r["style"] == "cached":
            series.setdefault(f"{_label(r)} {r['size']}²", []).append(
                (r["batch"], r["images_per_s"])
            )
    for label, pts in sorted(series.items()):
        if len(pts) > 1:
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set(xlabel="batch", ylabel="images/s", title="Throughput vs batch (style cached)")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    save(fig, PLOTS[1])

    # 3. speedup vs Gatys (log), best backend per model and size
    fig, ax = plt.subplots(figsize=(8, 5))
    summary = results["summary"]
    budgets = budgets_of(rows)
    width = 0.8 / max(1, len(budgets))
    for i, b in enumerate(budgets):
        xs, ys = [], []
        for j, s in enumerate(summary):
            if str(b) in s["speedup_vs_gatys"]:
                xs.append(j + i * width)
                ys.append(s["speedup_vs_gatys"][str(b)])
        ax.bar(xs, ys, width, label=f"vs Gatys-{b}")
    ax.set_xticks(
        [j + width * (len(budgets) - 1) / 2 for j in range(len(summary))],
        [f"{s['model']}\n{s['size']}²\n{s['best_backend']}" for s in summary],
        fontsize=7,
    )
    ax.set(yscale="log", ylabel="speedup (×, log)", title="Feed-forward speedup over Gatys")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if budgets:
        ax.legend(fontsize=8)
    save(fig, PLOTS[2])

    # 4. quality vs speed: PSNR vs fp32 of reduced precisions; SSIM to content incl. Gatys
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in ff:
        if r["precision"] != "fp32" and r.get("psnr_vs_fp32_db") is not None:
            x, y = r["p50_ms"] / r["batch"], r["psnr_vs_fp32_db"]
            a1.scatter(x, y, s=18)
            a1.annotate(
                f"{r['model']} {r['backend']} {r['precision']} {r['size']}² {r['style']}",
                (x, y),
                fontsize=6,
            )
    a1.axhline(40, color="grey", ls=":", lw=1)
    a1.set(xscale="log", xlabel="ms per image (log)", ylabel="PSNR vs fp32 (dB)")
    a1.set_title("Reduced precision: quality vs speed (dotted: 40 dB)", fontsize=9)
    groups: dict[str, list] = {}
    for r in ff + ok_rows(rows, method="gatys"):
        if r.get("ssim_content") is not None and r["batch"] == 1:
            groups.setdefault(r["model"], []).append((r["p50_ms"], r["ssim_content"]))
    for model, pts in sorted(groups.items()):
        marker = "x" if model == "gatys" else "o"
        a2.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=18, label=model)
    a2.set(xscale="log", xlabel="ms per image (log)", ylabel="SSIM to content")
    a2.set_title("Structure kept vs time (all sizes, batch 1)", fontsize=9)
    if groups:
        a2.legend(fontsize=7)
    save(fig, PLOTS[3])
    return written
