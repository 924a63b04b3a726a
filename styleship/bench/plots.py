"""The benchmark's PNG plots (matplotlib, headless), rendered from results.json."""

from __future__ import annotations

import io
from pathlib import Path

from styleship import _atomic
from styleship.bench.markdown import PLOTS, budgets_of, ok_rows


def _label(r: dict) -> str:
    return f"{r['model']} {r['backend']} {r['precision']}"


def _log_or_note(ax, values: list[float], *axes: str) -> None:
    """Log-scale `axes` when there is a positive value to draw; otherwise say on the plot
    that this run has nothing for it (matplotlib refuses a log axis with no positive data)."""
    if any(v > 0 for v in values):
        for axis in axes:
            getattr(ax, f"set_{axis}scale")("log")
        return
    ax.text(
        0.5,
        0.5,
        "nothing to show in this run",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="grey",
    )


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """The five PNGs; each is written atomically (rendered to bytes first)."""
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
    drawn = [p[1] for pts in series.values() for p in pts]
    for b in budgets_of(rows):
        pts = sorted((r["size"], r["p50_ms"]) for r in ok_rows(rows, method="gatys", budget=b))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "k--", marker="x", alpha=0.6)
        drawn += [p[1] for p in pts]
        if pts:
            ax.annotate(f"Gatys-{b}", pts[-1], fontsize=8)
    ax.set(xlabel="image side (px)", ylabel="p50 latency (ms, log)")
    _log_or_note(ax, drawn, "y")
    ax.set_title("Latency vs size (batch 1, style cached)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
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
    bars: list[float] = []
    for i, b in enumerate(budgets):
        xs, ys = [], []
        for j, s in enumerate(summary):
            if str(b) in s["speedup_vs_gatys"]:
                xs.append(j + i * width)
                ys.append(s["speedup_vs_gatys"][str(b)])
        ax.bar(xs, ys, width, label=f"vs Gatys-{b}")
        bars += ys
    ax.set_xticks(
        [j + width * (len(budgets) - 1) / 2 for j in range(len(summary))],
        [f"{s['model']}\n{s['size']}²\n{s['best_backend']}" for s in summary],
        fontsize=7,
    )
    ax.set(ylabel="speedup (×, log)", title="Feed-forward speedup over Gatys")
    _log_or_note(ax, bars, "y")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if bars:
        ax.legend(fontsize=8)
    save(fig, PLOTS[2])

    # 4. quality vs speed: PSNR vs fp32 of reduced precisions; SSIM to content incl. Gatys
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    reduced: list[float] = []
    for r in ff:
        if r["precision"] != "fp32" and r.get("psnr_vs_fp32_db") is not None:
            x, y = r["p50_ms"] / r["batch"], r["psnr_vs_fp32_db"]
            a1.scatter(x, y, s=18)
            reduced.append(x)
            a1.annotate(
                f"{r['model']} {r['backend']} {r['precision']} {r['size']}² {r['style']}",
                (x, y),
                fontsize=6,
            )
    a1.axhline(40, color="grey", ls=":", lw=1)
    a1.set(xlabel="ms per image (log)", ylabel="PSNR vs fp32 (dB)")
    _log_or_note(a1, reduced, "x")
    a1.set_title("Reduced precision: quality vs speed (dotted: 40 dB)", fontsize=9)
    groups: dict[str, list] = {}
    for r in ff + ok_rows(rows, method="gatys"):
        if r.get("ssim_content") is not None and r["batch"] == 1:
            groups.setdefault(r["model"], []).append((r["p50_ms"], r["ssim_content"]))
    for model, pts in sorted(groups.items()):
        marker = "x" if model == "gatys" else "o"
        a2.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=18, label=model)
    a2.set(xlabel="ms per image (log)", ylabel="SSIM to content")
    _log_or_note(a2, [p[0] for pts in groups.values() for p in pts], "x")
    a2.set_title("Structure kept vs time (all sizes, batch 1)", fontsize=9)
    if groups:
        a2.legend(fontsize=7)
    save(fig, PLOTS[3])

    # 5. roofline: achieved GFLOP/s of every row per backend and precision, against the peak
    fig, ax = plt.subplots(figsize=(9, 5))
    groups: dict[str, list] = {}
    for r in ok_rows(rows):
        if r.get("achieved_gflops") is not None and r["view"] == "compute":
            groups.setdefault(f"{r['backend']}\n{r['precision']}", []).append(r)
    peaks = (results.get("roofline") or {}).get("peaks", {})
    models = sorted({r["model"] for g in groups.values() for r in g})
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    drawn = []
    for i, (_, group) in enumerate(sorted(groups.items())):
        for j, r in enumerate(group):
            x = i + 0.5 * (j / max(1, len(group) - 1) - 0.5) * (len(group) > 1)
            ax.scatter(x, r["achieved_gflops"], s=14, color=colours[r["model"]])
            drawn.append(r["achieved_gflops"])
        own = [
            p["gflops"]
            for p in (results.get("roofline") or {}).get("probes", [])
            if p.get("status") == "ok"
            and (p["engine"], p["precision"]) == (group[0]["backend"], group[0]["precision"])
        ]
        if own:  # the engine's own best probe, where it falls short of the machine's
            ax.hlines(max(own), i - 0.35, i + 0.35, colors="grey", lw=1, linestyles="--")
            drawn.append(max(own))
        peak = group[0].get("peak_gflops")
        if peak:
            ax.hlines(peak, i - 0.35, i + 0.35, colors="k", lw=2)
            ax.annotate(f"peak {peak:,.0f}", (i, peak), fontsize=7, ha="center", va="bottom")
            drawn.append(peak)
    for model, colour in colours.items():
        ax.scatter([], [], color=colour, s=14, label=model)
    ax.set_xticks(range(len(groups)), sorted(groups), fontsize=7)
    ax.set_ylabel("GFLOP/s (log)")
    ax.set_title("Achieved vs measured peak (solid: the machine's, dashed: this engine's probe)")
    _log_or_note(ax, drawn, "y")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if models:
        ax.legend(fontsize=7)
    if peaks:
        names = ", ".join(f"{k} {v['gflops']:,.0f}" for k, v in peaks.items())
        ax.text(0.01, 0.01, f"peaks GFLOP/s: {names}", transform=ax.transAxes, fontsize=7)
    save(fig, PLOTS[4])
    return written
