"""Reduced precisions at export: add fp16 twins of the graphs, and measure how far
fp16 and bf16 outputs are from fp32. Recorded in the manifest, never a gate.

Which precision runs is not decided here: `Stylizer` times, on the machine
it runs on, every precision whose record passed (runtime/choice.py), so the
bars below are what a precision must clear to be a candidate at all: PSNR
≥ 40 dB for bf16 and fp16 (the benchmark's "equal quality"), ≥ 30 dB for
int8. ONNX Runtime CPU runs fp16 graphs by casting most nodes back to fp32,
so its fp16 record measures the weights' rounding, not GPU fp16 arithmetic.
The `default` flag and the p50s record what the exporting machine found.

OpenVINO int8 (the bundle's QDQ graphs, when it has them) is measured the
way `Stylizer` runs it, style encoder then stylizer (the fused int8 graph
also quantises the style encoder, which `Stylizer` never runs), on both
of OpenVINO's model paths (dynamic and shape-specific).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from styleship.bundle.writer import BundleWriter
from styleship.compare import compare
from styleship.errors import BackendUnavailable
from styleship.export import fp16 as fp16_convert
from styleship.export.int8 import MIN_PSNR as INT8_MIN_PSNR  # the project's int8 bar
from styleship.runtime.backends.openvino import STATIC_AFTER
from styleship.runtime.bundle import Bundle

MIN_PSNR = 40.0
GRAPH = "fused"  # the whole model in one graph: encoder, transform and decoder
STYLIZER = "stylizer"  # the graph a cached style runs: what a default precision speeds up


def add_fp16(writer: BundleWriter, log: Callable[[str], None]) -> None:
    """Write `<graph>.fp16.onnx` for every graph and list it in the manifest."""
    kept = {}
    for name, graph in list(writer.manifest.graphs.items()):
        log(f"converting {name} to fp16")
        dst = writer.stage / f"{name}.fp16.onnx"
        kept[name] = fp16_convert.convert(writer.stage / graph.files["fp32"], dst)
        writer.add_precision(name, "fp16", dst.name)
    writer.record(
        "fp16",
        {
            "rule": "fp16 weights and activations; fp32 inputs/outputs and the nodes listed",
            "graphs": kept,
        },
    )


def _run(bundle: Bundle, backend: str, precision: str, feed: dict) -> np.ndarray:
    from styleship.runtime.backends import create_backend

    graph = bundle.graph(GRAPH)
    image = graph.image_output
    with create_backend(backend) as engine:
        engine.load(bundle, GRAPH, "cpu", precision)
        return engine.run({t.name: feed[t.kind] for t in graph.inputs})[image]


def _diff(ref: np.ndarray, out: np.ndarray, min_psnr: float) -> dict:
    """PSNR and the rest against fp32 (styleship.compare), and the mean SSIM of the pairs."""
    from styleship.export.int8 import _ssim

    diff = compare({"image": ref}, {"image": out}, 1.0, min_psnr)[0]
    ssims = [_ssim(a, b) for a, b in zip(ref, out)]
    return diff.to_dict() | {"ssim": round(float(np.mean(ssims)), 4) if None not in ssims else None}


def _measure(bundle, backend, precision, samples, default, log) -> dict:
    from styleship.runtime.backends import available_backends

    record = {"backend": backend, "graph": GRAPH, "min_psnr_db": MIN_PSNR}
    reason = available_backends()[backend]
    if reason:
        return record | {"passed": False, "default": False, "reason": reason}
    results = []
    try:
        for size, feed in samples.items():
            ref = _run(bundle, "ort-cpu", "fp32", feed)
            out = _run(bundle, backend, precision, feed)
            results.append({"size": size, **_diff(ref, out, MIN_PSNR)})
            log(f"{precision} ({backend}) vs fp32 @{size}: PSNR {results[-1]['psnr_db']:.1f} dB")
    except BackendUnavailable as exc:
        return record | {"passed": False, "default": False, "reason": str(exc)}
    passed = all(r["passed"] for r in results)
    return record | {"results": results, "passed": passed, "default": passed and default}


def _pipeline(
    bundle: Bundle, backend: str, precision: str, feed: dict, calls: int = 1, **options
) -> np.ndarray:
    """What `Stylizer` runs, pair by pair at batch 1: the style encoder, then the stylizer
    on its code (`calls` times, the last kept), both on one engine at one precision (an
    int8 bundle's style encoder may be its fp32 graph)."""
    from styleship.runtime.backends import create_backend

    graph = bundle.graph(STYLIZER)
    outs = []
    with create_backend(backend, **options) as styler:
        styler.load(bundle, STYLIZER, "cpu", precision)
        encoder = None
        if "style_encoder" in bundle.graphs:
            encoder = create_backend(backend, **options)
            encoder.load(bundle, "style_encoder", "cpu", precision)
        try:
            for i in range(len(feed["content"])):
                values = {kind: value[i : i + 1] for kind, value in feed.items()}
                if encoder is not None:
                    spec = bundle.graph("style_encoder").inputs
                    values |= encoder.run({t.name: values[t.kind] for t in spec})
                inputs = {t.name: values[t.value_key] for t in graph.inputs}
                for _ in range(calls):
                    out = styler.run(inputs)[graph.image_output]
                outs.append(out)
        finally:
            if encoder is not None:
                encoder.close()
    return np.concatenate(outs)


def _stylizer_feed(bundle: Bundle, feed: dict) -> dict:
    """The stylizer graph's inputs for one parity pair, its style code from fp32 ONNX Runtime:
    a cached style, as `Stylizer` runs every image after the first."""
    from styleship.runtime.backends import create_backend

    values = {kind: value[:1] for kind, value in feed.items()}  # one pair: batch 1 is timed
    if "style_encoder" in bundle.graphs:
        encoder = bundle.graph("style_encoder")
        with create_backend("ort-cpu") as engine:
            engine.load(bundle, "style_encoder", "cpu", "fp32")
            values |= engine.run({t.name: values[t.kind] for t in encoder.inputs})
    return {t.name: values[t.value_key] for t in bundle.graph(STYLIZER).inputs}


def _openvino_p50_ms(bundle: Bundle, precisions: tuple, feed: dict, rounds: int = 7) -> dict:
    """OpenVINO's median time per precision on the stylizer graph, the precisions called in
    turn so a busy machine slows them alike, after the warm-up that compiles the
    shape-specific model (runtime/backends/openvino.py)."""
    import time

    from styleship.runtime.backends import create_backend

    engines = {p: create_backend("openvino") for p in precisions}
    samples: dict[str, list[float]] = {p: [] for p in precisions}
    try:
        for precision, engine in engines.items():
            engine.load(bundle, STYLIZER, "cpu", precision)
            for _ in range(3):
                engine.run(feed)
        for _ in range(rounds):
            for precision, engine in engines.items():
                t0 = time.perf_counter()
                engine.run(feed)
                samples[precision].append((time.perf_counter() - t0) * 1e3)
    finally:
        for engine in engines.values():
            engine.close()
    return {p: round(float(np.median(v)), 2) for p, v in samples.items()}


# OpenVINO runs a shape's first call on the model compiled for dynamic shapes and later
# calls on one compiled for that shape (runtime/backends/openvino.py); int8 can differ
# between the two (vqvae-demo: 23.5 dB dynamic, 36.0 dB shape-specific), and users get
# both, so both are measured.
OV_PATHS = {"dynamic": ({"shape_cache": 0}, 1), "shape-specific": ({}, STATIC_AFTER)}


def _openvino_int8(bundle: Bundle, samples: dict, bf16: dict, log, precision: str = "int8") -> dict:
    """OpenVINO int8 against fp32 the way `Stylizer` runs it, on both of OpenVINO's model
    paths (PSNR ≥ 30 dB), and OpenVINO's times; a default only where it passes everywhere
    and beats OpenVINO fp32 here."""
    from styleship.runtime.backends import available_backends

    graph = f"style_encoder → {STYLIZER}"
    record = {"backend": "openvino", "graph": graph, "min_psnr_db": INT8_MIN_PSNR}
    reason = available_backends()["openvino"]
    if reason:
        return record | {"passed": False, "default": False, "reason": reason}
    results = []
    try:
        for size, feed in samples.items():
            ref = _pipeline(bundle, "ort-cpu", "fp32", feed)
            for path, (options, calls) in OV_PATHS.items():
                out = _pipeline(bundle, "openvino", precision, feed, calls, **options)
                results.append({"size": size, "shapes": path, **_diff(ref, out, INT8_MIN_PSNR)})
                psnr = results[-1]["psnr_db"]
                log(f"{precision} (openvino, {path} model) vs fp32 @{size}: PSNR {psnr:.1f} dB")
        feed = _stylizer_feed(bundle, samples[min(samples)])
        which = ("fp32", precision) + (() if "reason" in bf16 else ("bf16",))
        times = _openvino_p50_ms(bundle, which, feed)
    except BackendUnavailable as exc:
        return record | {"passed": False, "default": False, "reason": str(exc)}
    passed = all(r["passed"] for r in results)
    timed = {"graph": STYLIZER, "size": min(samples), "style": "cached"}
    if "bf16" in times:
        bf16 |= {"p50_ms": times["bf16"], "timed": timed}
    spent = ", ".join(f"{p} {t} ms" for p, t in times.items())
    log(f"OpenVINO {STYLIZER} @{min(samples)}: {spent}")
    return record | {
        "results": results,
        "passed": passed,
        "p50_ms": times[precision],
        "fp32_p50_ms": times["fp32"],
        "timed": timed,
        "default": passed and times[precision] < times["fp32"],
    }


def reduced_precision_parity(
    bundle: Bundle, samples: dict[int, dict[str, np.ndarray]], log: Callable[[str], None]
) -> dict:
    """bf16 on OpenVINO, int8 on OpenVINO when the bundle has int8 graphs, and fp16 on
    ONNX Runtime CPU when it has fp16 graphs."""
    out = {"bf16": _measure(bundle, "openvino", "bf16", samples, True, log)}
    if "int8" in bundle.graph(STYLIZER).files:
        out["int8"] = _openvino_int8(bundle, samples, out["bf16"], log)
        if "reason" not in out["bf16"]:  # the CPU runs bf16 natively: the QDQ graph in bf16
            out["int8-bf16"] = _openvino_int8(bundle, samples, out["bf16"], log, "int8-bf16")
    if "fp16" in bundle.graph(GRAPH).files:
        out["fp16"] = _measure(bundle, "ort-cpu", "fp16", samples, False, log)
        out["fp16"]["note"] = (
            "ONNX Runtime CPU computes most fp16 nodes in fp32 after casting: this measures "
            "fp16 weights and the fp32 islands, not GPU fp16 arithmetic"
        )
    return out
