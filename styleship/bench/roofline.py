"""The roofline of a run: FLOPs per image of every row, its achieved GFLOP/s, and its
fraction of the machine's measured peak at the row's precision.

FLOPs come from the row's ONNX graph at the row's size (bench/flops.py): the
stylizer graph when the style is cached, the fused graph when it is not, the
fp32 file whatever the row's precision (an int8 or bf16 run does the same
arithmetic in narrower types). Achieved GFLOP/s is FLOPs × batch over the
row's p50; a tiled row is credited with the untiled image's FLOPs, the
useful work, not the overlap it recomputes. A Gatys row has no graph: its
worker counts one closure call with torch's FlopCounterMode. Peaks come from
the probes (bench/probe.py): per precision, the fastest probe of any engine.
"""

from __future__ import annotations

from collections.abc import Callable

from styleship.runtime.bundle import Bundle

# The peak a row is held against: its own precision where one was measured. On the CPU,
# tf32 is fp32 arithmetic; fp16 rows (ONNX Runtime CPU casts most fp16 nodes back to fp32)
# have no measured fp16 peak there and fall back to fp32.
PEAK_FALLBACK = {"tf32": "fp32", "fp16": "fp32"}
NOTE = (
    "FLOPs: 2 per multiply-accumulate of Conv, ConvTranspose, MatMul and Gemm in the row's "
    "fp32 graph at its size (stylizer if the style is cached, fused if not; tiled rows: the "
    "untiled image; Gatys: its closure calls, counted by torch's FlopCounterMode); "
    "achieved = FLOPs × batch / p50; peak: the fastest probe per precision."
)


def input_shapes(bundle: Bundle, graph: str, size: int, batch: int = 1) -> dict[str, tuple]:
    """Concrete shapes of a graph's inputs for a square size² image: images are
    (batch, 3, size, size), every other dynamic dim is the batch."""
    shapes = {}
    for spec in bundle.graph(graph).inputs:
        if spec.kind in ("content", "style"):
            shapes[spec.name] = (batch, 3, size, size)
        else:
            shapes[spec.name] = tuple(batch if isinstance(d, str) else int(d) for d in spec.shape)
    return shapes


class FlopCounter:
    """FLOPs per image of a bundle's graph at a size, counted once and remembered."""

    def __init__(self, bundles: dict[str, Bundle]) -> None:
        self.bundles = bundles
        self._cache: dict[tuple, int | None] = {}
        self.errors: dict[str, str] = {}

    def per_image(self, model: str, graph: str, size: int) -> int | None:
        key = (model, graph, size)
        if key not in self._cache:
            self._cache[key] = self._count(model, graph, size)
        return self._cache[key]

    def _count(self, model: str, graph: str, size: int) -> int | None:
        from styleship.bench.flops import count_flops
        from styleship.errors import first_line

        bundle = self.bundles.get(model)
        if bundle is None or graph not in bundle.graphs:
            return None
        try:
            path = bundle.graph_file(graph, "fp32")
            return count_flops(path, input_shapes(bundle, graph, size)).total
        except Exception as exc:  # counted after all timing: a graph it cannot read must not
            # cost the run its results, only this count (recorded in roofline.flop_errors)
            self.errors[f"{model} {graph} {size}"] = first_line(exc)
            return None


def peaks(probes: list[dict]) -> dict[str, dict]:
    """Per precision: the fastest ok probe (GFLOP/s, engine, which probe)."""
    out: dict[str, dict] = {}
    for p in probes:
        if p.get("status") != "ok":
            continue
        best = out.get(p["precision"])
        if best is None or p["gflops"] > best["gflops"]:
            out[p["precision"]] = {k: p[k] for k in ("gflops", "engine", "probe", "shape")}
    return out


def peak_for(precision: str, table: dict[str, dict]) -> float | None:
    entry = table.get(precision) or table.get(PEAK_FALLBACK.get(precision, ""))
    return entry["gflops"] if entry else None


def add_roofline(
    rows: list[dict], flops: Callable[[str, str, int], int | None], table: dict
) -> None:
    """Annotate every timed row in place: GFLOP per image, achieved GFLOP/s, the peak at
    its precision and the fraction of it. A Gatys row's image costs its budget of closure
    calls, each counted by torch (bench/worker.py); rows without a count are left without."""
    for r in rows:
        if r.get("status") != "ok" or not r.get("p50_ms"):
            continue
        if r.get("method") == "gatys":
            calls = r.get("call_flops")
            per_image = calls * r["budget"] if calls else None
        else:
            graph = "stylizer" if r["style"] == "cached" else "fused"
            per_image = flops(r["model"], graph, r["size"])
        if per_image is None:
            continue
        batch = r["batch"] if r["view"] == "compute" else 1
        achieved = per_image * batch / (r["p50_ms"] / 1000) / 1e9
        peak = peak_for(r["precision"], table)
        r["gflop_per_image"] = per_image / 1e9
        r["achieved_gflops"] = achieved
        r["peak_gflops"] = peak
        r["fraction_of_peak"] = achieved / peak if peak else None


def measure_probes(
    spawn: Callable[[dict, str], dict], status: dict[str, str | None], device: str, index: int
) -> list[dict]:
    """One pass of the peak probes: a fresh worker per engine (bench/probe.py)."""
    from styleship.bench.probe import ENGINES

    kind = "cuda" if device.startswith("cuda") else "cpu"
    out = []
    for engine in ENGINES[kind]:
        reason = status.get(engine)
        if reason:
            out.append({"engine": engine, "status": "skipped", "reason": reason})
            continue
        job = {"kind": "peak", "engine": engine, "device": device}
        result = spawn(job, f"peak-{engine}-p{index}")
        if result["status"] != "ok":
            out.append({"engine": engine, "status": result["status"], "reason": result["reason"]})
            continue
        out += result["probes"]
    return out


def merge_probes(passes: list[list[dict]]) -> list[dict]:
    """Every probe's best pass: a peak is the most the chip was seen to do, so a pass that
    met a busy spell does not lower it. A probe that never ran keeps its first reason."""
    groups: dict[tuple, list[dict]] = {}
    for results in passes:
        for p in results:
            groups.setdefault((p["engine"], p.get("precision"), p.get("probe")), []).append(p)
    out = []
    for group in groups.values():
        ok = [p for p in group if p.get("status") == "ok"]
        if not ok:
            out.append(group[0])
            continue
        best = max(ok, key=lambda p: p["gflops"])
        out.append(best | {"passes": len(ok), "pass_gflops": [p["gflops"] for p in ok]})
    return out
