"""int8 on trained weights: what each remedy buys, on pairs the models never saw.

For each bundle (the shipped demos and the imported pretrained Magenta model),
every (photo, painting) pair of `assets/heldout/` at 512² is run through the
stylizer graph, the style code computed once in fp32 (style cached, as served).
Each variant is scored by PSNR against the bundle's fp32 graph on ONNX Runtime,
and timed at 512², batch 1, on the first pair (median of 15 calls after 3
warm-up calls, all cores; OpenVINO compiled for the fixed shape with the
LATENCY hint, as the openvino backend does for a shape it has seen before):

- fp32 on ONNX Runtime (the reference time: the issue's "fp32 ORT"), fp32 and
  bf16 on OpenVINO;
- the bundle's int8 graph (export/int8.py: the convolutions that see the
  content, the most error-sensitive kept float) on ONNX Runtime and OpenVINO,
  and on OpenVINO with a bf16 inference hint: mixed int8/bf16, what stays
  float runs in bf16;
- every content convolution quantised, no float set (the same calibration);
- Magenta only: the release's own int8 graph (TFLite int8 by tf2onnx, adapted
  as `import magenta` adapts it), which also quantises the 1×1 convolutions
  that turn the style code into normalisation parameters.

Run it with nothing else on the CPU:

    python benchmarks/int8_trained.py --bundle stvae-demo=assets/models/stvae-demo.stvae \\
        --bundle magenta=build/train/magenta.magenta --out benchmarks/results/cpu/int8-trained
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from styleship.bench.report import write_table
from styleship.compare import psnr
from styleship.export.int8 import CALIBRATION_SIZE, MIN_PSNR, Quantiser, code_feeds
from styleship.export.samples import calibration_images, default_parity_images, parity_feed
from styleship.runtime.backends.ort import cpu_threads
from styleship.runtime.bundle import Bundle

HELDOUT = Path(__file__).resolve().parent.parent / "assets" / "heldout"
SIZE = 512
GOAL_SPEEDUP = 1.8  # issue 16: an int8 or mixed path >= 1.8x its fp32 ORT time at >= 30 dB


def _heldout(bundle: Bundle) -> list[dict]:
    contents = sorted((HELDOUT / "content").glob("*.jpg"))
    styles = sorted((HELDOUT / "styles").glob("*.jpg"))
    return list(code_feeds(bundle, "stylizer", parity_feed(contents, styles, SIZE)))


def _time(call, feed: dict) -> float:
    for _ in range(3):
        call(feed)
    samples = []
    for _ in range(15):
        t0 = time.perf_counter()
        call(feed)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _ort(path: Path, feeds: list[dict]) -> tuple[list[np.ndarray], float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    session = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])
    outs = [session.run(None, f)[0] for f in feeds]
    return outs, _time(lambda f: session.run(None, f), feeds[0])


def _openvino(path: Path, feeds: list[dict], hint: str) -> tuple[list[np.ndarray], float]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({i.get_any_name(): list(feeds[0][i.get_any_name()].shape) for i in model.inputs})
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": hint,
        "INFERENCE_NUM_THREADS": cpu_threads(),
    }
    request = core.compile_model(model, "CPU", config).create_infer_request()

    def call(feed: dict) -> np.ndarray:
        return next(iter(request.infer(feed).values())).copy()

    return [call(f) for f in feeds], _time(call, feeds[0])


def _every_conv(bundle: Bundle, dst: Path) -> Path:
    """The stylizer with every convolution that sees the content quantised."""
    contents, styles = calibration_images(*default_parity_images())
    calib = list(code_feeds(bundle, "stylizer", parity_feed(contents, styles, CALIBRATION_SIZE)))
    quantiser = Quantiser(bundle, "stylizer", dst.parent, calib)
    try:
        quantiser.write(dst)
    finally:
        quantiser.close()
    return dst


def _release_int8(dst: Path) -> Path:
    """Magenta's release transform graph, int8 as shipped, adapted like `import magenta`."""
    import onnx

    from styleship.export import magenta_graphs as mg
    from styleship.export.magenta import package_file

    model = onnx.load(str(package_file("arbitrary_transform.onnx")))
    mg.batch_free(model)
    mg.spatial_free(model)
    onnx.save(mg.stylizer(model), str(dst))
    return dst


def measure(name: str, path: Path, log) -> list[dict]:
    bundle = Bundle.load(path)
    feeds = _heldout(bundle)
    graph = bundle.graph("stylizer")
    fp32, int8 = (path / graph.files[p] for p in ("fp32", "int8"))
    refs, ref_ms = _ort(fp32, feeds)
    rows = []

    def add(variant: str, engine: str, result: tuple[list[np.ndarray], float]) -> None:
        outs, ms = result
        scores = [psnr(r, o) for r, o in zip(refs, outs)]
        finite = [s for s in scores if np.isfinite(s)]
        row = {
            "model": name,
            "variant": variant,
            "engine": engine,
            "p50_ms": round(ms, 2),
            "speedup_vs_fp32_ort": round(ref_ms / ms, 2),
            "psnr_db_min": round(min(finite), 2) if finite else None,
            "psnr_db_mean": round(float(np.mean(finite)), 2) if finite else None,
        }
        row["meets_goal"] = (
            "int8" in variant
            and row["speedup_vs_fp32_ort"] >= GOAL_SPEEDUP
            and (row["psnr_db_min"] or 0) >= MIN_PSNR
        )
        rows.append(row)
        log(f"{name:12s} {variant:34s} {engine:16s} {ms:7.1f} ms  min {row['psnr_db_min']} dB")

    add("fp32", "ort", (refs, ref_ms))
    add("fp32", "openvino f32", _openvino(fp32, feeds, "f32"))
    add("fp32", "openvino bf16", _openvino(fp32, feeds, "bf16"))
    add("int8 (shipped)", "ort", _ort(int8, feeds))
    add("int8 (shipped)", "openvino f32", _openvino(int8, feeds, "f32"))
    add("int8 (shipped)", "openvino bf16", _openvino(int8, feeds, "bf16"))
    with tempfile.TemporaryDirectory() as tmp:
        every = _every_conv(bundle, Path(tmp) / "every.onnx")
        add("int8, every content conv", "openvino f32", _openvino(every, feeds, "f32"))
        add("int8, every content conv", "openvino bf16", _openvino(every, feeds, "bf16"))
        if bundle.family == "magenta":
            release = _release_int8(Path(tmp) / "release.onnx")
            add("int8, the release's graph", "ort", _ort(release, feeds))
            add("int8, the release's graph", "openvino f32", _openvino(release, feeds, "f32"))
    return rows


def markdown(results: dict) -> str:
    lines = [
        "# int8 on trained weights (held-out pairs, 512², style cached)\n",
        f"Machine: {results['machine']}, {results['threads']} threads; "
        f"{results['pairs']} pairs from assets/heldout/; p50 of 15 calls on the first pair. "
        "PSNR against the bundle's fp32 graph on ONNX Runtime; × fp32 ORT against its time. "
        f"Goal (issue 16): an int8 or mixed path ≥ {GOAL_SPEEDUP}× at ≥ {MIN_PSNR:g} dB.\n",
        "| model | graph | engine | p50 ms | × fp32 ORT | PSNR min dB | PSNR mean dB | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['engine']} | {r['p50_ms']:.1f} | "
            f"{r['speedup_vs_fp32_ort']:.2f}× | {r['psnr_db_min'] or '-'} | "
            f"{r['psnr_db_mean'] or '-'} | {'yes' if r['meets_goal'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    for spec in args.bundle:
        name, _, path = spec.partition("=")
        if not path or not Path(path).is_dir():
            print(f"error: --bundle wants NAME=PATH to a bundle, not {spec!r}", file=sys.stderr)
            return 2
        rows += measure(name, Path(path), lambda msg: print(msg, flush=True))
    results = {
        "machine": platform.processor() or platform.machine(),
        "threads": cpu_threads(),
        "size": SIZE,
        "pairs": len(list((HELDOUT / "content").glob("*.jpg")))
        * len(list((HELDOUT / "styles").glob("*.jpg"))),
        "rows": rows,
    }
    write_table(args.out, "results", results, markdown(results))
    print(f"wrote {args.out}/results.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
