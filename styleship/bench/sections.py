"""results.md sections for the roofline (bench/roofline.py) and the cost-vs-pixels fit
(bench/scaling.py). Results from before either existed render without them."""

from __future__ import annotations

from styleship.bench.scaling import PREDICT, cost_vs_pixels


def roofline_cells(r: dict, fmt) -> list[str]:
    """GFLOP per image, achieved GFLOP/s, share of the peak: `-` where not recorded."""
    return [
        fmt(r.get("gflop_per_image")),
        fmt(r.get("achieved_gflops")),
        fmt(r.get("fraction_of_peak"), "share"),
    ]


ROOFLINE_HEADER = ["GFLOP/image", "GFLOP/s", "of peak"]


def roofline_section(results: dict, fmt, table) -> list[str]:
    roof = results.get("roofline")
    if not roof:
        return []
    rows = [
        [
            p["precision"],
            p["engine"],
            p["shape"],
            fmt(p["p50_ms"]),
            fmt(p["gflops"]),
            str(p.get("passes", 1)),
        ]
        for p in roof.get("probes", [])
        if p.get("status") == "ok"
    ]
    peaks = [
        [precision, fmt(p["gflops"]), f"{p['engine']}, {p['probe']}"]
        for precision, p in roof.get("peaks", {}).items()
    ]
    out = [
        "\n## Roofline: measured peak per precision\n\n",
        f"{roof.get('note', '')} Probes: one large operator per engine and precision, "
        "timed in a worker process of its own each pass; the best pass counts.\n\n",
    ]
    if peaks:
        out.append(table(["precision", "peak GFLOP/s", "from"], peaks))
    if rows:
        out.append("\n")
        header = ["precision", "engine", "probe", "p50 ms", "GFLOP/s", "passes"]
        out.append(table(header, rows))
    skipped = [p for p in roof.get("probes", []) if p.get("status") != "ok"]
    for p in skipped:
        what = " ".join(str(p[k]) for k in ("engine", "precision", "probe") if p.get(k))
        out.append(f"\n- not probed: {what}: {p.get('reason')}")
    if skipped:
        out.append("\n")
    errors = roof.get("flop_errors") or {}
    for where, reason in errors.items():
        out.append(f"\nFLOPs not counted for {where}: {reason}\n")
    return out


def _signed(value: float, fmt) -> str:
    return f"{'−' if value < 0 else '+'} {fmt(abs(value))}"


def scaling_section(results: dict, fmt, table) -> list[str]:
    """The fitted lines; computed from the rows when the results predate them."""
    fits = results.get("scaling")
    if fits is None:
        fits = cost_vs_pixels(results["rows"], results.get("summary", []))
    fits = [f for f in fits if f["ms_per_mp"] is not None]
    if not fits:
        return []
    names = list(PREDICT)
    rows = []
    for f in fits:
        sizes = f["sizes"]
        rows.append(
            [
                f["model"],
                f"{f['backend']} {f['precision']}",
                f"{sizes[0]}²–{sizes[-1]}² ({len(sizes)})",
                f"{fmt(f['ms_per_mp'])} ms/MP {_signed(f['ms_intercept'], fmt)} ms",
                fmt(f["ms_r2"], "ssim"),
                f"{fmt(f['mib_per_mp'])} MiB/MP {_signed(f['mib_intercept'], fmt)} MiB"
                if f["mib_per_mp"] is not None
                else "-",
                *(
                    f"{fmt(f['predicted'][n]['ms'])} ms, {fmt(f['predicted'][n]['mib'])} MiB"
                    for n in names
                ),
            ]
        )
    header = ["model", "best path", "sizes (points)", "latency", "R²", "peak RSS"]
    header += [f"predicted {n}" for n in names]
    return [
        "\n## Cost as work grows (best path, batch 1, style cached, compute only)\n\n",
        "Least-squares lines through the best path's p50 and peak RSS against megapixels "
        "(MP = side²/10⁶); the intercept is the fixed part (engine, the style transform on its "
        "fixed bottleneck). Predictions extrapolate the line: an image whose predicted memory "
        "does not fit is a case for tiling (docs/tiling.md).\n\n",
        table(header, rows),
    ]
