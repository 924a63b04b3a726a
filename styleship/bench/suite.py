"""Run a suite: the Gatys baseline, every case of its matrix in passes, then the reports.

`results.json` is the single source every report is rendered from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from styleship import _atomic
from styleship.bench import report
from styleship.bench.config import BenchCase, Suite
from styleship.bench.env import environment
from styleship.bench.roofline import (
    NOTE,
    FlopCounter,
    add_roofline,
    measure_probes,
    merge_probes,
    peaks,
)
from styleship.bench.runner import P99_MIN_SAMPLES, Log, Runner
from styleship.bench.scaling import cost_vs_pixels
from styleship.bench.yardstick import add_style_gain
from styleship.compare import psnr
from styleship.errors import BackendUnavailable, InputError


def add_speedups(rows: list[dict]) -> None:
    """Per-image feed-forward time vs each Gatys budget at the same size, same run."""
    gatys = {
        (r["size"], r["budget"]): r["p50_ms"]
        for r in rows
        if r["method"] == "gatys" and r["status"] == "ok"
    }
    for r in rows:
        if r["method"] == "gatys" or r["status"] != "ok" or r["view"] != "compute":
            continue
        per_image = r["p50_ms"] / r["batch"]
        r["speedup_vs_gatys"] = {
            str(budget): ms / per_image for (size, budget), ms in gatys.items() if size == r["size"]
        }


def headline_min_psnr(precision: str) -> float:
    """The quality a reduced-precision row must hold against fp32 to count as the same
    picture: export's own bars (export/precision.py), 40 dB for bf16/fp16, 30 dB for int8."""
    from styleship.export.precision import INT8_MIN_PSNR, MIN_PSNR

    return INT8_MIN_PSNR if precision == "int8" else MIN_PSNR


def summarize(rows: list[dict], peak_table: dict[str, dict] | None = None) -> list[dict]:
    """Per model and size (batch 1, style cached): the fastest backend whose output stays
    within 40 dB of fp32 (30 dB for int8), against PyTorch eager fp32 and against Gatys,
    and the ceiling: the image's FLOPs at the fastest peak the probes measured, which no
    backend can beat, as a speed-up over eager."""
    top = max((p["gflops"] for p in (peak_table or {}).values()), default=None)
    out = []
    ok = [
        r
        for r in rows
        if r["status"] == "ok"
        and r["method"] not in ("gatys", "peer")
        and r["batch"] == 1
        and r["style"] == "cached"
    ]
    for model, size in sorted({(r["model"], r["size"]) for r in ok}):
        group = [r for r in ok if r["model"] == model and r["size"] == size]
        compute = [r for r in group if r["view"] == "compute"]
        equal = [
            r
            for r in compute
            if r["precision"] == "fp32"
            or (r.get("psnr_vs_fp32_db") or 0) >= headline_min_psnr(r["precision"])
        ]
        if not equal:
            continue
        best = min(equal, key=lambda r: r["p50_ms"])
        torch_ref = next(
            (r for r in compute if r["backend"] == "torch" and r["precision"] == "fp32"), None
        )
        e2e = next(
            (
                r
                for r in group
                if r["view"] == "end-to-end"
                and (r["backend"], r["precision"]) == (best["backend"], best["precision"])
            ),
            None,
        )
        gflop = best.get("gflop_per_image")
        ceiling_ms = gflop / top * 1e3 if gflop and top else None
        out.append(
            {
                "model": model,
                "size": size,
                "best_backend": best["backend"],
                "best_precision": best["precision"],
                "best_p50_ms": best["p50_ms"],
                "best_psnr_vs_fp32_db": best.get("psnr_vs_fp32_db"),
                "best_achieved_gflops": best.get("achieved_gflops"),
                "best_fraction_of_peak": best.get("fraction_of_peak"),
                "torch_eager_p50_ms": torch_ref["p50_ms"] if torch_ref else None,
                "speedup_vs_torch_eager": torch_ref["p50_ms"] / best["p50_ms"]
                if torch_ref
                else None,
                "ceiling_ms": ceiling_ms,
                "ceiling_vs_torch_eager": torch_ref["p50_ms"] / ceiling_ms
                if torch_ref and ceiling_ms
                else None,
                "end_to_end_p50_ms": e2e["p50_ms"] if e2e else None,
                "end_to_end_overhead": e2e["p50_ms"] / best["p50_ms"] - 1 if e2e else None,
                "speedup_vs_gatys": best.get("speedup_vs_gatys", {}),
            }
        )
    return out


def add_peer_parity(rows: list[dict]) -> None:
    """PSNR of each style-cached output of the peer's model against the peer's output at the
    same size (an uncached row encodes the style itself, at another size: not the same
    inputs); then the outputs' temporary files leave the rows."""
    peer = {
        r["size"]: np.load(r["output"])
        for r in rows
        if r["method"] == "peer" and r["view"] == "compute" and r.get("output")
    }
    models = {r["model"] for r in rows if r["method"] == "peer"}
    for r in rows:
        path = r.pop("output", None)
        same_inputs = r["style"] == "cached" and r["method"] != "peer" and r["size"] in peer
        if path and same_inputs and r["model"] in models:
            r["psnr_vs_peer_db"] = psnr(peer[r["size"]], np.load(path))


def _as_close(row: dict, peer: dict) -> bool:
    """Whether a row's output is at least as close to the float network as the peer's: both
    measured against styleship's fp32 graph of the same model (fp32 rows are it)."""
    if row["precision"] == "fp32":
        return True
    mine, theirs = row.get("psnr_vs_fp32_db"), peer.get("psnr_vs_fp32_db")
    return mine is not None and theirs is not None and mine >= theirs


def peer_summary(rows: list[dict]) -> list[dict]:
    """Per size: the peer against styleship's fastest path whose output is at least as close
    to the float network as the peer's own (its int8 graph rounds activations too), compute
    and end to end, measured in the same run."""
    ok = [r for r in rows if r["status"] == "ok" and r["batch"] == 1 and r["style"] == "cached"]
    out = []
    for peer in (r for r in ok if r["method"] == "peer" and r["view"] == "compute"):
        ours = [
            r
            for r in ok
            if r["model"] == peer["model"]
            and r["size"] == peer["size"]
            and r["method"] != "peer"
            and r["view"] == "compute"
            and _as_close(r, peer)
        ]
        best = min(ours, key=lambda r: r["p50_ms"]) if ours else None

        def e2e(of: dict | None) -> dict | None:
            return next(
                (
                    r
                    for r in ok
                    if of is not None
                    and r["view"] == "end-to-end"
                    and r["size"] == of["size"]
                    and (r["model"], r["backend"], r["precision"])
                    == (of["model"], of["backend"], of["precision"])
                ),
                None,
            )

        peer_e2e, best_e2e = e2e(peer), e2e(best)
        out.append(
            {
                "model": peer["model"],
                "size": peer["size"],
                "peer_p50_ms": peer["p50_ms"],
                "peer_end_to_end_p50_ms": peer_e2e["p50_ms"] if peer_e2e else None,
                "best_backend": best["backend"] if best else None,
                "best_precision": best["precision"] if best else None,
                "best_p50_ms": best["p50_ms"] if best else None,
                "psnr_vs_peer_db": best.get("psnr_vs_peer_db") if best else None,
                "peer_psnr_vs_fp32_db": peer.get("psnr_vs_fp32_db"),
                "best_psnr_vs_fp32_db": best.get("psnr_vs_fp32_db") if best else None,
                "speedup": peer["p50_ms"] / best["p50_ms"] if best else None,
                "best_end_to_end_p50_ms": best_e2e["p50_ms"] if best_e2e else None,
                "end_to_end_speedup": peer_e2e["p50_ms"] / best_e2e["p50_ms"]
                if peer_e2e and best_e2e
                else None,
            }
        )
    return out


def run_suite(
    suite: Suite,
    out_dir: Path,
    work_dir: Path,
    on_step: Callable[[str], None] = lambda label: None,
    log: Log = lambda msg: None,
) -> dict:
    """Run everything, write results.json and the reports into `out_dir`; return the results.

    Order: a standalone Gatys calibration, the Gatys runs, then pass 1 of every
    case, pass 2 of every case, ...; each in a process of its own (`[gatys]
    after_cases = true` puts Gatys after the cases). Quality is scored at the
    end, once nothing is being timed. Until then results.json is rewritten after
    every case and Gatys size with the timings so far (`"complete": false`, no
    quality scores), so a run stopped part-way keeps every row it measured.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out must be a directory: {out_dir}")
    require_device(suite)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    env = environment()  # before measuring: the commit and versions that were measured
    runner = Runner(suite, work_dir, log)
    gatys_rows: list[dict] = []
    measured: list[BenchCase] = []
    probe_passes: list[list[dict]] = []

    def save_so_far() -> None:
        rows = [dict(r) for r in gatys_rows] + [
            row for c in measured for row in runner.case_rows(c, suite.block_of(c), score=False)
        ]
        for r in rows:
            r.pop("snapshot", None)  # a temporary file: scored (and dropped) at the end
        add_speedups(rows)
        doc = _document(suite, env, runner, rows, started, merge_probes(probe_passes), None)
        _atomic.write_text(out_dir / "results.json", json.dumps(doc, indent=2) + "\n")

    def gatys() -> None:
        on_step("gatys calibration")
        runner.calibrate()
        for size in suite.gatys.sizes:
            on_step(f"gatys {size}²")
            gatys_rows.extend(runner.run_gatys(size))
            save_so_far()

    if not suite.gatys.after_cases:
        gatys()
    cases = suite.cases()
    device = "cuda:0" if suite.device == "cuda" else "cpu"
    for index in range(suite.timing.passes):
        if suite.peak_probe:
            on_step(f"peak probes (pass {index + 1}/{suite.timing.passes})")
            probe_passes.append(measure_probes(runner.spawn, runner.status, device, index))
        for case in cases:
            label = f"{case.model} {case.backend} {case.precision} {case.size}² b{case.batch}"
            on_step(f"{label} (pass {index + 1}/{suite.timing.passes})")
            runner.measure_pass(case, suite.block_of(case), index)
            if index == 0:
                measured.append(case)
            save_so_far()
    if suite.gatys.after_cases:
        gatys()
    on_step("scoring quality")
    runner.score_gatys(gatys_rows)
    rows = list(gatys_rows)
    for case in cases:
        rows += runner.case_rows(case, suite.block_of(case))
    add_peer_parity(rows)
    add_speedups(rows)
    add_style_gain(rows)
    counter = FlopCounter(runner.bundles)
    results = _document(suite, env, runner, rows, started, merge_probes(probe_passes), counter)
    _atomic.write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    report.write_reports(results, out_dir)
    return results


def _document(
    suite: Suite,
    env: dict,
    runner: Runner,
    rows: list[dict],
    started: float,
    probes: list[dict],
    counter: FlopCounter | None,
) -> dict:
    """results.json's content. Without a FLOP counter it is a run still going: no roofline
    figures on the rows, and `complete` false."""
    peak_table = peaks(probes)
    if counter is not None:
        add_roofline(rows, counter.per_image, peak_table)
    summary = summarize(rows, peak_table)
    return {
        "format": report.FORMAT,
        "format_version": report.FORMAT_VERSION,
        "complete": counter is not None,
        "suite": {
            "name": suite.name,
            "description": suite.description,
            "file": suite.path.name,
            "config": suite.text,
            "device": suite.device,
            "timing": asdict(suite.timing),
            "content": suite.content.name,
            "style": suite.style.name,
        },
        "environment": env,
        "method": {
            "isolation": "each Gatys run and each pass of each case in a fresh process",
            "passes": suite.timing.passes,
            "p50": "median of the passes' p50s",
            "p99_min_samples": P99_MIN_SAMPLES,
            "allocator": runner.allocator,
        },
        "calibration": runner.calibration(),
        "yardstick": {"source": runner.yardstick.source}
        if runner.yardstick
        else {"source": None, "reason": runner.yardstick_note},
        "vgg": runner._scorer.provenance if runner._scorer else {"source": suite.vgg},
        "models": {
            mid: {
                "family": b.family,
                "config": b.meta.config,
                "parameters": b.meta.model_info.get("parameters"),
                "untrained": b.untrained,
            }
            for mid, b in runner.bundles.items()
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": time.time() - started,
        "rows": rows,
        "summary": summary,
        "peer": peer_summary(rows),
        "roofline": {
            "note": NOTE,
            "peaks": peak_table,
            "probes": probes,
            "flop_errors": counter.errors if counter else {},
        },
        "scaling": cost_vs_pixels(rows, summary),
    }


def require_device(suite: Suite) -> None:
    """Stop before measuring anything when a GPU suite meets a machine without a GPU."""
    from styleship.doctor import gpus

    if suite.device == "cuda" and not gpus():
        raise BackendUnavailable(
            "this suite needs a CUDA GPU and none is visible here (nvidia-smi finds none)"
        )


def count_steps(suite: Suite) -> int:
    """Progress steps: calibration, Gatys sizes, every pass of the probes and of every case,
    scoring."""
    per_pass = len(suite.cases()) + suite.peak_probe
    return 2 + len(suite.gatys.sizes) + suite.timing.passes * per_pass
