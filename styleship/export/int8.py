"""int8 graphs for CPUs: ONNX Runtime static quantisation, calibrated on sample images.

What is quantised, and how:
- Only convolutions. They hold nearly all the FLOPs, and on x86 CPUs with
  VNNI, ONNX Runtime runs QDQ int8 convolutions as integer kernels.
- Weights are int8, one scale per output channel. Activations are uint8,
  with asymmetric ranges from Percentile calibration (99.99th percentile)
  on the sample images. In exploratory runs on the trained demo bundle,
  Percentile beat MinMax and Entropy, and 99.99 beat 99.999 and 99.9.

What stays float:
- Everything the fp16 rules keep in fp32 (export/fp16.py): normalisation
  statistics, the covariance and the VAE of the ST-VAE transform, the VQ
  distance, argmax and lookup, and the style head.
- The whole style encoder. It runs once per style, and its code is cached,
  so quantising it would only add error.
- As many of the content encoder's deepest convolutions as it takes to
  reach PSNR ≥ 30 dB against fp32 on the parity pairs, found by binary
  search (`_search`). The transform amplifies encoder errors, and the
  deepest layers amplify them most. Each float layer costs speed; the
  manifest records every trial.

The int8 graphs are `stylizer.int8.onnx` and `fused.int8.onnx`. The manifest
records PSNR and SSIM against fp32, and the speed-up measured at export on
the exporting machine. The format is QDQ, so any ONNX Runtime build can run
the graphs, though only CPUs with int8 dot-product instructions get faster.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from styleship import _atomic
from styleship._hashing import sha256_file
from styleship.compare import compare
from styleship.export.fp16 import fp32_nodes, scopes
from styleship.runtime.bundle import MANIFEST, Bundle

QUANTISED_GRAPHS = ("stylizer", "fused")
METHOD = "Percentile"
PERCENTILE = 99.99  # exploratory runs on the trained demo: 99.99 > 99.999 (default) > 99.9
CALIBRATION_SIZE = 256
MEASURE_SIZE = 512
MIN_PSNR = 30.0  # the default bar for "usable int8" (PSNR vs fp32 on [0, 1] images)


def _feeds(bundle: Bundle, graph: str, samples: dict[str, np.ndarray]) -> Iterator[dict]:
    """One feed per (content, style) pair, the style code computed in fp32."""
    import onnxruntime as ort

    spec = bundle.graph(graph)
    encoder = ort.InferenceSession(
        str(bundle.path / bundle.graph("style_encoder").files["fp32"]),
        providers=["CPUExecutionProvider"],
    )
    style_input = bundle.graph("style_encoder").inputs[0].name
    names = [t.name for t in bundle.graph("style_encoder").outputs]
    for s in range(len(samples["style"])):
        style = samples["style"][s : s + 1]
        code = dict(zip(names, encoder.run(None, {style_input: style})))
        for c in range(len(samples["content"])):
            values = {
                **code,
                "content": samples["content"][c : c + 1],
                "style": style,
                "strength": np.ones(1, np.float32),
            }
            yield {t.name: values[t.value_key] for t in spec.inputs}


def _in_modules(node, modules: set[str]) -> bool:
    return any(scope in modules for scope in scopes(node))


def encoder_modules(bundle: Bundle) -> list[str]:
    """The content encoder's quantisable convolutions, by module, from input to output."""
    import onnx

    model = onnx.load(str(bundle.path / bundle.graph("stylizer").files["fp32"]))
    keep = set(fp32_nodes(model))
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in keep:
            continue
        inner = [s for s in scopes(node) if "encoder" in s.split(".")]
        if inner and inner[-1] not in out:
            out.append(inner[-1])
    return out


def _quantise(
    bundle: Bundle,
    graph: str,
    dst: Path,
    feeds: list[dict],
    float_modules: set[str] = frozenset(),
) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    src = bundle.path / bundle.graph(graph).files["fp32"]
    model = onnx.load(str(src))
    keep = set(fp32_nodes(model))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    nodes = {n.name: n for n in model.graph.node}
    excluded = [n for n in convs if n in keep or _in_modules(nodes[n], float_modules)]
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_suffix(".prep.onnx")
    with contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():
        # Shape inference and graph fusions first, as ONNX Runtime's quantiser recommends.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        try:
            _quantise_prepared(prepared, dst, Reader(), excluded)
        finally:
            prepared.unlink(missing_ok=True)
    return {"convs": len(convs), "quantised": len(convs) - len(excluded), "float": excluded}


def _quantise_prepared(src: Path, dst: Path, reader, excluded: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"],
        nodes_to_exclude=excluded,
        calibrate_method=getattr(CalibrationMethod, METHOD),
        extra_options={"CalibPercentile": PERCENTILE},
    )


@contextlib.contextmanager
def _quiet_root_logger():
    """The quantiser logs advice and prints its calibration ranges; export shows its own log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _p50_ms(session, feed: dict, runs: int = 5) -> float:
    session.run(None, feed)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))


def _sessions(bundle: Bundle, int8_file: Path) -> dict:
    import onnxruntime as ort

    fp32 = bundle.path / bundle.graph("stylizer").files["fp32"]
    return {
        p: ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        for p, f in (("fp32", fp32), ("int8", int8_file))
    }


def _quality(bundle: Bundle, sessions: dict, feeds: list[dict]) -> list[dict]:
    """PSNR (and SSIM) of int8 against fp32 on every feed."""
    image = bundle.graph("stylizer").image_output
    quality = []
    for feed in feeds:
        ref, out = (sessions[p].run([image], feed)[0] for p in ("fp32", "int8"))
        diff = compare({"image": ref}, {"image": out}, 1.0, MIN_PSNR)[0]
        quality.append({"psnr_db": round(diff.psnr_db, 2), "ssim": _ssim(ref[0], out[0])})
    return quality


def _measure(bundle: Bundle, feeds: list[dict], min_psnr: float, log) -> dict:
    """int8 vs fp32 on the stylizer graph at MEASURE_SIZE²: quality on every pair, then speed."""
    sessions = _sessions(bundle, bundle.path / bundle.graph("stylizer").files["int8"])
    quality = _quality(bundle, sessions, feeds)
    psnr = [q["psnr_db"] for q in quality]
    timing = {p: round(_p50_ms(s, feeds[0]), 1) for p, s in sessions.items()}
    log(
        f"int8 vs fp32 @{MEASURE_SIZE}: PSNR {min(psnr):.1f}–{max(psnr):.1f} dB, "
        f"{timing['fp32'] / timing['int8']:.2f}× faster on ORT CPU"
    )
    ssims = [q["ssim"] for q in quality if q["ssim"] is not None]
    return {
        "size": MEASURE_SIZE,
        "pairs": quality,
        "psnr_db_mean": round(float(np.mean(psnr)), 2),
        "psnr_db_min": min(psnr),
        "ssim_mean": round(float(np.mean(ssims)), 4) if ssims else None,
        "passed": min(psnr) >= min_psnr,
        "min_psnr_db": min_psnr,
        "ort_cpu_p50_ms": timing,
        "speedup": round(timing["fp32"] / timing["int8"], 2),
        "measured_on": platform.processor() or platform.machine(),
    }


def _ssim(ref: np.ndarray, out: np.ndarray) -> float | None:
    """SSIM with scikit-image when installed (the bench extra); otherwise not recorded."""
    try:
        from styleship.bench.metrics import ssim
    except ImportError:
        return None
    try:
        return round(ssim(out.transpose(1, 2, 0), ref.transpose(1, 2, 0)), 4)
    except ImportError:
        return None


def _search(
    bundle: Bundle,
    stage: Path,
    calibration: list[dict],
    feeds: list[dict],
    min_psnr: float,
    log: Callable[[str], None],
) -> tuple[set[str], list[dict]]:
    """The fewest deepest encoder convolutions to keep in float for PSNR ≥ min_psnr everywhere.

    Encoder errors are what the style transform amplifies, the deepest most;
    keeping k of them in float trades speed for quality. Binary search on k
    (quality is taken as monotonic in k); if even the whole encoder in float
    misses the bar, all of it is quantised, for speed, and the record says so.
    """
    modules = encoder_modules(bundle)
    trial_file = stage / "stylizer.int8-trial.onnx"
    tried: dict[int, float] = {}

    def worst(k: int) -> float:
        if k not in tried:
            kept = set(modules[len(modules) - k :]) if k else set()
            _quantise(bundle, "stylizer", trial_file, calibration, kept)
            quality = _quality(bundle, _sessions(bundle, trial_file), feeds)
            tried[k] = min(q["psnr_db"] for q in quality)
            log(f"int8 with the {k} deepest encoder convs in float: min PSNR {tried[k]:.1f} dB")
        return tried[k]

    try:
        if worst(0) >= min_psnr or not modules or worst(len(modules)) < min_psnr:
            k = 0
        else:
            lo, hi = 1, len(modules)  # worst(hi) passes
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if worst(mid) >= min_psnr else (mid + 1, hi)
            k = hi
    finally:
        trial_file.unlink(missing_ok=True)
    search = [{"float_encoder_convs": k_, "psnr_db_min": v} for k_, v in sorted(tried.items())]
    return (set(modules[len(modules) - k :]) if k else set()), search


def add_int8(
    stage: Path,
    manifest: dict,
    calibration: dict[str, np.ndarray],
    measure: dict[str, np.ndarray],
    log: Callable[[str], None],
    min_psnr: float = MIN_PSNR,
) -> None:
    """Write `<graph>.int8.onnx` for the per-image graphs and record how they compare (in place).

    `calibration` and `measure` are sample images by kind (`content`, `style`),
    N×3×H×W, at CALIBRATION_SIZE² and MEASURE_SIZE². `min_psnr` is the quality
    bar the encoder search aims for; 0 quantises every convolution it may.
    """
    bundle = Bundle.load(stage)
    # Feeds (with style codes) are made once: the search re-quantises with the same ones.
    calib = {name: list(_feeds(bundle, name, calibration)) for name in QUANTISED_GRAPHS}
    checks = list(_feeds(bundle, "stylizer", measure))
    float_modules, search = _search(bundle, stage, calib["stylizer"], checks, min_psnr, log)
    details = {}
    for name in QUANTISED_GRAPHS:
        log(f"quantising {name} to int8 ({METHOD} calibration)")
        dst = stage / f"{name}.int8.onnx"
        details[name] = _quantise(bundle, name, dst, calib[name], float_modules)
        manifest["graphs"][name]["files"]["int8"] = dst.name
        manifest["files"][dst.name] = sha256_file(dst)
    # The style encoder runs once per style: it keeps its fp32 graph under int8.
    encoder = manifest["graphs"]["style_encoder"]["files"]
    encoder["int8"] = encoder["fp32"]
    _atomic.write_text(stage / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    manifest["int8"] = {
        "rule": "QDQ; int8 per-channel weights and uint8 activations for convolutions; "
        "float for the nodes listed and the whole style encoder",
        "calibration": {
            "method": METHOD,
            "size": CALIBRATION_SIZE,
            "pairs": len(calibration["content"]) * len(calibration["style"]),
        },
        "search": {"min_psnr_db": min_psnr, "trials": search},
        "float_encoder_modules": sorted(float_modules),
        "graphs": details,
        "vs_fp32": _measure(Bundle.load(stage), checks, min_psnr, log),
    }
    _atomic.write_text(stage / MANIFEST, json.dumps(manifest, indent=2) + "\n")
