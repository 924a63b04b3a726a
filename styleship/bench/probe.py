"""The machine's measured peak per precision: large GEMM and convolution graphs timed through
the engines the suite measures, in a worker process like every case.

Why through the engines: the peak that matters for a row is what an engine's
best kernels reach on this chip, with the same threads and the same thread
pool, not a datasheet figure. Each probe is one big operator with nothing
around it, so its time is arithmetic alone:

- `gemm`: a 2048×2048 by 2048×2048 MatMul (the weight a constant);
  8192³ on a GPU, which a smaller one would not fill.
- `conv`: a 3×3 convolution, 256 → 256 channels, on a 1×256×64×64 input;
  512 channels on 128² on a GPU.

fp32 and bf16 run the float graph (bf16 through OpenVINO's inference
precision hint, and torch on bf16 tensors); int8 runs a QDQ twin (uint8
activations, int8 weights, as the bundles' int8 graphs), which OpenVINO
and ONNX Runtime turn into VNNI integer kernels. A precision's peak is the
fastest probe of any engine, and rows are held against it (bench/roofline.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from styleship.bench.config import Timing

GEMM = {"cpu": 2048, "cuda": 8192}  # M = N = K
CONV = {  # a 3×3 convolution, channels → channels, on a side² input
    "cpu": {"channels": 256, "side": 64, "kernel": 3},
    "cuda": {"channels": 512, "side": 128, "kernel": 3},
}
# Short and fixed, so peaks are comparable across suites whatever their own timing.
PROBE_TIMING = Timing(warmup=2, min_iterations=3, max_iterations=50, min_seconds=0.3)
ENGINES = {"cpu": ("openvino", "ort-cpu", "torch"), "cuda": ("torch",)}


def _conv(kind: str) -> tuple[int, int, int]:
    c = CONV[kind]
    return c["channels"], c["side"], c["kernel"]


def probe_flops(probe: str, kind: str = "cpu") -> int:
    """FLOPs of one call (2 per multiply-accumulate)."""
    if probe == "gemm":
        return 2 * GEMM[kind] ** 3
    c, s, k = _conv(kind)
    return 2 * c * c * k * k * s * s


def describe(probe: str, kind: str = "cpu") -> str:
    if probe == "gemm":
        n = GEMM[kind]
        return f"MatMul {n}×{n}×{n}"
    c, s, k = _conv(kind)
    return f"Conv {k}×{k} {c}→{c} ch at {s}²"


def _feed(probe: str, kind: str = "cpu") -> np.ndarray:
    rng = np.random.default_rng(0)
    c, s, _ = _conv(kind)
    shape = (GEMM[kind],) * 2 if probe == "gemm" else (1, c, s, s)
    return rng.uniform(0, 1, shape).astype(np.float32)


def _weight(probe: str, kind: str = "cpu") -> np.ndarray:
    rng = np.random.default_rng(1)
    c, _, k = _conv(kind)
    shape = (GEMM[kind],) * 2 if probe == "gemm" else (c, c, k, k)
    return rng.uniform(-0.05, 0.05, shape).astype(np.float32)


def probe_graph(probe: str, int8: bool = False):
    """The CPU probe as an ONNX model; `int8` puts QuantizeLinear/DequantizeLinear pairs on
    the activation (uint8) and the weight (int8), as a QDQ-quantised graph has them."""
    from onnx import TensorProto, helper, numpy_helper

    x_shape = list(_feed(probe).shape)
    weight = _weight(probe)
    nodes, inits = [], []
    x, w = "x", "w"
    if int8:
        w_scale = float(np.abs(weight).max() / 127)
        q = np.clip(np.round(weight / w_scale), -127, 127).astype(np.int8)
        inits += [
            numpy_helper.from_array(q, "w_q"),
            numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
            numpy_helper.from_array(np.array(1 / 255, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
        ]
        nodes += [
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"]),
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        ]
        x, w = "x_dq", "w_dq"
    else:
        inits.append(numpy_helper.from_array(weight, "w"))
    if probe == "gemm":
        nodes.append(helper.make_node("MatMul", [x, w], ["y"]))
        y_shape = [GEMM["cpu"]] * 2
    else:
        pad = CONV["cpu"]["kernel"] // 2
        nodes.append(helper.make_node("Conv", [x, w], ["y"], pads=[pad] * 4))
        y_shape = x_shape
    graph = helper.make_graph(
        nodes,
        f"{probe}-probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _openvino(probe: str, precision: str) -> tuple[Callable[[], object], str]:
    import openvino as ov

    from styleship.runtime.backends.openvino import OV_PRECISION
    from styleship.runtime.backends.ort import cpu_threads

    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise _Skip("this CPU has no native bf16")
    model = core.read_model(probe_graph(probe, precision == "int8").SerializeToString(), b"")
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
        "INFERENCE_NUM_THREADS": cpu_threads(),
    }
    request = core.compile_model(model, "CPU", config).create_infer_request()
    feed = {"x": _feed(probe)}
    return (lambda: request.infer(feed, share_inputs=True)), f"openvino {ov.get_version()}"


def _ort(probe: str, precision: str) -> tuple[Callable[[], object], str]:
    import onnxruntime as ort

    from styleship.runtime.backends.ort import cpu_threads

    if precision not in ("fp32", "int8"):
        raise _Skip(f"ONNX Runtime CPU has no {precision} kernels")
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    model = probe_graph(probe, precision == "int8").SerializeToString()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {"x": _feed(probe)}
    return (lambda: session.run(None, feed)), f"onnxruntime {ort.__version__}"


TORCH_DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _torch(probe: str, precision: str, device: str) -> tuple[Callable[[], object], str]:
    import torch

    if precision not in TORCH_DTYPES or (device == "cpu" and precision in ("tf32", "fp16")):
        raise _Skip(f"no torch {precision} probe on {device}")
    dtype = getattr(torch, TORCH_DTYPES[precision])
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = (
            precision == "tf32"
        )
    kind = "cuda" if device.startswith("cuda") else "cpu"
    x = torch.from_numpy(_feed(probe, kind)).to(device, dtype)
    w = torch.from_numpy(_weight(probe, kind)).to(device, dtype)
    op = torch.matmul if probe == "gemm" else torch.nn.functional.conv2d
    extra = {} if probe == "gemm" else {"padding": CONV[kind]["kernel"] // 2}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call() -> None:
        with torch.no_grad():
            op(x, w, **extra)
        sync()

    return call, f"torch {torch.__version__}"


class _Skip(Exception):
    """This engine has no kernel for this precision here: not a probe result."""


PRECISIONS = {"cpu": ("fp32", "bf16", "int8"), "cuda": ("fp32", "tf32", "fp16", "bf16")}


def run_probes(engine: str, device: str) -> list[dict]:
    """Every probe × precision `engine` runs on `device`: GFLOP/s at the p50 call."""
    from styleship.bench.timing import Stats, measure_calls

    kind = "cuda" if device.startswith("cuda") else "cpu"
    out = []
    for precision in PRECISIONS[kind]:
        for probe in ("gemm", "conv"):
            base = {"engine": engine, "precision": precision, "probe": probe}
            base |= {"shape": describe(probe, kind), "flops": probe_flops(probe, kind)}
            try:
                if engine == "openvino":
                    fn, version = _openvino(probe, precision)
                elif engine == "ort-cpu":
                    fn, version = _ort(probe, precision)
                else:
                    fn, version = _torch(probe, precision, device)
            except _Skip as exc:
                out.append(base | {"status": "skipped", "reason": str(exc)})
                continue
            t0 = time.perf_counter()
            fn()
            first_ms = (time.perf_counter() - t0) * 1000
            ms = measure_calls({"call": fn}, PROBE_TIMING)["call"].ms
            stats = Stats.from_samples(ms)
            gflops = base["flops"] / stats.p50_ms / 1e6
            out.append(
                base
                | {"status": "ok", "version": version, "p50_ms": stats.p50_ms}
                | {"min_ms": stats.min_ms, "first_call_ms": first_ms, "gflops": gflops}
            )
    return out
