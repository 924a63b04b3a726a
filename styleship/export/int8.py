"""int8 graphs for CPUs: ONNX Runtime static quantisation, calibrated on sample images.

What is quantised, and how:
- Only convolutions that see the content image. They hold nearly all the
  FLOPs, and on x86 CPUs with VNNI, OpenVINO and ONNX Runtime run QDQ int8
  convolutions as integer kernels. Convolutions that see only the style
  (a style encoder inside a fused graph, or Magenta's 1×1 convolutions that
  turn the style code into normalisation parameters) run once per style
  and cost nothing per pixel, but quantising them moves every output pixel:
  on the pretrained Magenta model one of them alone costs 24 dB.
- Weights are int8, one scale per output channel. Activations are uint8,
  with asymmetric ranges from Percentile calibration (99.99th percentile)
  on the sample images, computed once per graph. In exploratory runs on the
  trained demo, Percentile beat MinMax and Entropy, and 99.99 beat 99.999
  and 99.9; on Magenta all three were within 0.1 dB (exploratory, not in
  the committed results).

What stays float:
- The convolutions inside a family's fp32 modules (the ST-VAE's transform,
  with its covariance and VAE; export/fp16.py), and every non-convolution.
- The whole style encoder. It runs once per style, and its code is cached,
  so quantising it would only add error.
- The fewest convolutions it takes to reach PSNR ≥ 30 dB against fp32 on
  the parity pairs, most sensitive first (`_search`): each candidate is
  quantised alone to measure what it costs, then a binary search finds how
  many of the worst to keep in float. Sensitivity, not depth, decides: on
  the VQ-VAE demo every encoder convolution quantised alone leaves 28.6–39.1
  dB (a small error flips codebook entries), every decoder one 44.6 dB or
  more. The
  manifest records the sensitivities and every trial.

The int8 graphs are `stylizer.int8.onnx` and `fused.int8.onnx`; a
convolution is the same one in both when its weights are (by hash). The
manifest records PSNR and SSIM against fp32, and the speed-up measured at
export on the exporting machine. The format is QDQ, so any ONNX Runtime
build can run the graphs, though only CPUs with int8 dot-product
instructions get faster.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from styleship.bundle.writer import BundleWriter
from styleship.compare import psnr
from styleship.export.fp16 import in_fp32_module
from styleship.export.samples import style_coder
from styleship.runtime.bundle import Bundle

QUANTISED_GRAPHS = ("stylizer", "fused")
METHOD = "Percentile"
PERCENTILE = 99.99  # exploratory runs on the trained demo: 99.99 > 99.999 (default) > 99.9
CALIBRATION_SIZE = 256
MEASURE_SIZE = 512
MIN_PSNR = 30.0  # the default bar for "usable int8" (PSNR vs fp32 on [0, 1] images)


def code_feeds(bundle: Bundle, graph: str, samples: dict[str, np.ndarray]) -> Iterator[dict]:
    """One feed per (content, style) pair, the style code computed in fp32."""
    spec = bundle.graph(graph)
    coder = style_coder(bundle)
    for s in range(len(samples["style"])):
        style = samples["style"][s : s + 1]
        code = coder(style) if coder else {}
        for c in range(len(samples["content"])):
            values = {
                **code,
                "content": samples["content"][c : c + 1],
                "style": style,
                "strength": np.ones(1, np.float32),
            }
            yield {t.name: values[t.value_key] for t in spec.inputs}


def content_convs(model, content: set[str]) -> list[str]:
    """The convolutions downstream of the `content` inputs, in graph order."""
    seen = set(content)
    out = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if seen.intersection(node.input):
            seen.update(node.output)
            if node.op_type == "Conv":
                out.append(node.name)
    return out


def conv_keys(model) -> dict[str, str]:
    """Each convolution's weight hash: the same layer in the stylizer and the fused graph."""
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    keys = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = weights.get(node.input[1])
            if w is None:  # a computed weight: the node's name is all there is
                keys[node.name] = node.name
                continue
            array = numpy_helper.to_array(w)
            digest = hashlib.sha256(repr(array.shape).encode() + array.tobytes())
            keys[node.name] = digest.hexdigest()
    return keys


class Quantiser:
    """One graph's quantiser: prepared and calibrated once, then written with any float set."""

    def __init__(
        self,
        bundle: Bundle,
        graph: str,
        stage: Path,
        feeds: list[dict],
        layers: set[str] | None = None,
    ) -> None:
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.src = bundle.path / bundle.graph(graph).files["fp32"]
        model = onnx.load(str(self.src))
        self.keys = conv_keys(model)
        content = {t.name for t in bundle.graph(graph).inputs if t.kind == "content"}
        nodes = {n.name: n for n in model.graph.node}
        self.convs = list(self.keys)
        # Candidates: convolutions that see the content and sit in no fp32 module, or, given
        # `layers` (weight keys), those layers: a fused graph quantises what its stylizer does
        # (Magenta's fused graph also runs its style encoder on the content).
        self.candidates = [
            n
            for n in content_convs(model, content)
            if not in_fp32_module(nodes[n]) and (layers is None or self.keys[n] in layers)
        ]
        self.prepared = stage / f"{graph}.int8-prep.onnx"
        self.cache = stage / f"{graph}.int8-calibration.json"
        self.feeds = feeds
        with contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():
            # Shape inference and graph fusions first, as ONNX Runtime's quantiser recommends.
            quant_pre_process(str(self.src), str(self.prepared), skip_symbolic_shape=True)

    def write(self, dst: Path, float_keys: set[str] = frozenset()) -> dict:
        """Quantise every candidate whose weights are not in `float_keys`; returns the split."""
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self, feeds: list[dict]) -> None:
                self.feeds = iter(feeds)

            def get_next(self) -> dict | None:
                return next(self.feeds, None)

        quantised = {n for n in self.candidates if self.keys[n] not in float_keys}
        excluded = [n for n in self.convs if n not in quantised]
        # The first call calibrates every candidate and caches the ranges; later calls,
        # which quantise a subset, read them back.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():
            _quantise_prepared(self.prepared, dst, Reader(self.feeds), excluded, self.cache)
        return {"convs": len(self.convs), "quantised": len(quantised), "float": excluded}

    def close(self) -> None:
        self.prepared.unlink(missing_ok=True)
        self.cache.unlink(missing_ok=True)


def _quantise_prepared(src: Path, dst: Path, reader, excluded: list[str], cache: Path) -> None:
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
        calibration_cache_path=str(cache),
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


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _outputs(bundle: Bundle, session, feeds: list[dict]) -> list[np.ndarray]:
    image = bundle.graph("stylizer").image_output
    return [session.run([image], feed)[0] for feed in feeds]


def _psnrs(refs: list[np.ndarray], outs: list[np.ndarray]) -> list[float]:
    return [round(psnr(ref, out), 2) for ref, out in zip(refs, outs)]


def _measure(bundle: Bundle, feeds: list[dict], min_psnr: float, log) -> dict:
    """int8 vs fp32 on the stylizer graph at MEASURE_SIZE²: quality on every pair, then speed."""
    files = bundle.graph("stylizer").files
    sessions = {p: _session(bundle.path / files[p]) for p in ("fp32", "int8")}
    refs, outs = (_outputs(bundle, sessions[p], feeds) for p in ("fp32", "int8"))
    scores = _psnrs(refs, outs)
    quality = [
        {"psnr_db": v, "ssim": _ssim(ref[0], out[0])} for v, ref, out in zip(scores, refs, outs)
    ]
    timing = {p: round(_p50_ms(s, feeds[0]), 1) for p, s in sessions.items()}
    log(
        f"int8 vs fp32 @{MEASURE_SIZE}: PSNR {min(scores):.1f}–{max(scores):.1f} dB, "
        f"{timing['fp32'] / timing['int8']:.2f}× faster on ORT CPU"
    )
    ssims = [q["ssim"] for q in quality if q["ssim"] is not None]
    for q in quality:  # nothing quantised: fp32 itself, no PSNR (JSON has no infinity)
        q["psnr_db"] = _finite(q["psnr_db"])
    return {
        "size": MEASURE_SIZE,
        "pairs": quality,
        "psnr_db_mean": _finite(round(float(np.mean(scores)), 2)),
        "psnr_db_min": _finite(min(scores)),
        "ssim_mean": round(float(np.mean(ssims)), 4) if ssims else None,
        "passed": min(scores) >= min_psnr,
        "min_psnr_db": min_psnr,
        "ort_cpu_p50_ms": timing,
        "speedup": round(timing["fp32"] / timing["int8"], 2),
        "measured_on": platform.processor() or platform.machine(),
    }


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


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
    quantiser: Quantiser,
    trial_file: Path,
    feeds: list[dict],
    min_psnr: float,
    log: Callable[[str], None],
) -> tuple[set[str], dict]:
    """The fewest convolutions to keep in float for PSNR ≥ min_psnr on every feed.

    First all candidates quantised; if that misses the bar, all in float (if
    even that misses, everything is quantised, for speed, and the record
    says so). Otherwise each candidate is quantised alone and ranked by the
    PSNR it leaves, then a binary search on k keeps the k worst in float
    (quality taken as monotonic in k). Returns the float convolutions' weight
    keys and the record.
    """
    keys = quantiser.keys
    tried: dict[int, float] = {}
    ranked: list[str] = list(quantiser.candidates)
    fp32 = _session(bundle.path / bundle.graph("stylizer").files["fp32"])
    refs = _outputs(bundle, fp32, feeds)  # once: every trial is held against the same outputs

    def worst(float_names: list[str]) -> float:
        quantiser.write(trial_file, {keys[n] for n in float_names})
        return min(_psnrs(refs, _outputs(bundle, _session(trial_file), feeds)))

    def trial(k: int) -> float:
        if k not in tried:
            tried[k] = worst(ranked[:k])
            log(f"int8 with the {k} most sensitive convs in float: min PSNR {tried[k]:.1f} dB")
        return tried[k]

    record: dict = {"method": "sensitivity", "min_psnr_db": min_psnr}
    n = len(ranked)
    if trial(0) >= min_psnr or not n or trial(n) < min_psnr:
        k = 0
    else:
        sensitivity = {}
        for i, name in enumerate(quantiser.candidates):
            sensitivity[name] = worst([c for c in quantiser.candidates if c != name])
            log(f"int8 sensitivity {i + 1}/{n}: {name} alone leaves {sensitivity[name]:.1f} dB")
        ranked = sorted(quantiser.candidates, key=sensitivity.get)
        record["sensitivity"] = [{"conv": c, "psnr_db_min": sensitivity[c]} for c in ranked]
        tried = {0: tried[0], n: tried[n]}  # the ends do not depend on the order
        lo, hi = 1, n  # trial(hi) passes
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if trial(mid) >= min_psnr else (mid + 1, hi)
        k = hi
    record["trials"] = [
        {"float_convs": k_, "psnr_db_min": _finite(v)} for k_, v in sorted(tried.items())
    ]
    return {keys[c] for c in ranked[:k]}, record


def add_int8(
    writer: BundleWriter,
    calibration: dict[str, np.ndarray],
    measure: dict[str, np.ndarray],
    log: Callable[[str], None],
    min_psnr: float = MIN_PSNR,
) -> None:
    """Write `<graph>.int8.onnx` for the per-image graphs and record how they compare.

    `calibration` and `measure` are sample images by kind (`content`, `style`),
    N×3×H×W, at CALIBRATION_SIZE² and MEASURE_SIZE². `min_psnr` is the quality
    bar the search aims for; 0 quantises every convolution it may.
    """
    stage = writer.stage
    bundle = writer.bundle()
    # Feeds (with style codes) are made once: the search re-quantises with the same ones.
    checks = list(code_feeds(bundle, "stylizer", measure))
    calib = {name: list(code_feeds(bundle, name, calibration)) for name in QUANTISED_GRAPHS}
    quantisers = {"stylizer": Quantiser(bundle, "stylizer", stage, calib["stylizer"])}
    layers = {quantisers["stylizer"].keys[n] for n in quantisers["stylizer"].candidates}
    quantisers["fused"] = Quantiser(bundle, "fused", stage, calib["fused"], layers)
    trial_file = stage / "stylizer.int8-trial.onnx"
    details = {}
    try:
        float_keys, search = _search(
            bundle, quantisers["stylizer"], trial_file, checks, min_psnr, log
        )
        for name, quantiser in quantisers.items():
            log(f"quantising {name} to int8 ({METHOD} calibration)")
            dst = stage / f"{name}.int8.onnx"
            details[name] = quantiser.write(dst, float_keys)
            writer.add_precision(name, "int8", dst.name)
    finally:
        trial_file.unlink(missing_ok=True)
        for quantiser in quantisers.values():
            quantiser.close()
    # The style encoder runs once per style: it keeps its fp32 graph under int8.
    encoder = writer.manifest.graphs["style_encoder"].files
    writer.add_precision("style_encoder", "int8", encoder["fp32"])
    record = {
        "rule": "QDQ; int8 per-channel weights and uint8 activations for the convolutions "
        "that see the content image, but those in fp32 modules and those the search keeps "
        "float; the whole style encoder float",
        "calibration": {
            "method": METHOD,
            "size": CALIBRATION_SIZE,
            "pairs": len(calibration["content"]) * len(calibration["style"]),
        },
        "search": search,
        "graphs": details,
        "vs_fp32": _measure(writer.bundle(), checks, min_psnr, log),
    }
    writer.record("int8", record)


def add_int8_for_images(
    writer: BundleWriter,
    contents: list[Path],
    styles: list[Path],
    log: Callable[[str], None],
    min_psnr: float = MIN_PSNR,
) -> None:
    """`add_int8` calibrated on `contents` × `styles` and every sample image of the repository
    (CALIBRATION_SIZE²), checked on `contents` × `styles` (MEASURE_SIZE²)."""
    from styleship.export.samples import calibration_images, parity_feed

    cal_contents, cal_styles = calibration_images(contents, styles)
    calibration = parity_feed(cal_contents, cal_styles, CALIBRATION_SIZE)
    measure = parity_feed(contents, styles, MEASURE_SIZE)
    add_int8(writer, calibration, measure, log, min_psnr)
