"""Reduced precisions at export: add fp16 twins of the graphs, and measure how far
fp16 and bf16 outputs are from fp32. Recorded in the manifest, never a gate.

`Stylizer` picks a reduced precision by default only where the record says
`default: true`: it passed (PSNR ≥ 40 dB, the bar the benchmark uses for
"equal quality") on an engine where it is also faster. OpenVINO bf16
qualifies; ONNX Runtime CPU runs fp16 graphs by casting most nodes back to
fp32, so its fp16 record measures the weights' rounding, not GPU fp16
arithmetic, and never becomes a default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from styleship import _atomic
from styleship._hashing import sha256_file
from styleship.compare import compare
from styleship.errors import BackendUnavailable
from styleship.export import fp16 as fp16_convert
from styleship.runtime.bundle import MANIFEST, Bundle

MIN_PSNR = 40.0
GRAPH = "fused"  # the whole model in one graph: encoder, transform and decoder


def add_fp16(stage: Path, manifest: dict, log: Callable[[str], None]) -> None:
    """Write `<graph>.fp16.onnx` for every graph and list it in the manifest (in place)."""
    kept = {}
    for name, graph in manifest["graphs"].items():
        log(f"converting {name} to fp16")
        dst = stage / f"{name}.fp16.onnx"
        kept[name] = fp16_convert.convert(stage / graph["files"]["fp32"], dst)
        graph["files"]["fp16"] = dst.name
        manifest["files"][dst.name] = sha256_file(dst)
    manifest["fp16"] = {
        "rule": "fp16 weights and activations; fp32 inputs/outputs and the nodes listed",
        "graphs": kept,
    }
    _atomic.write_text(stage / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _run(bundle: Bundle, backend: str, precision: str, feed: dict) -> np.ndarray:
    from styleship.runtime.backends import create_backend

    graph = bundle.graph(GRAPH)
    image = graph.image_output
    with create_backend(backend) as engine:
        engine.load(bundle, GRAPH, "cpu", precision)
        return engine.run({t.name: feed[t.kind] for t in graph.inputs})[image]


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
            diff = compare({"image": ref}, {"image": out}, 1.0, MIN_PSNR)[0]
            log(f"{precision} ({backend}) vs fp32 @{size}: PSNR {diff.psnr_db:.1f} dB")
            results.append({"size": size, **diff.to_dict()})
    except BackendUnavailable as exc:
        return record | {"passed": False, "default": False, "reason": str(exc)}
    passed = all(r["passed"] for r in results)
    return record | {"results": results, "passed": passed, "default": passed and default}


def reduced_precision_parity(
    bundle: Bundle, samples: dict[int, dict[str, np.ndarray]], log: Callable[[str], None]
) -> dict:
    """bf16 on OpenVINO and, when the bundle has fp16 graphs, fp16 on ONNX Runtime CPU."""
    out = {"bf16": _measure(bundle, "openvino", "bf16", samples, True, log)}
    if "fp16" in bundle.graph(GRAPH).files:
        out["fp16"] = _measure(bundle, "ort-cpu", "fp16", samples, False, log)
        out["fp16"]["note"] = (
            "ONNX Runtime CPU computes most fp16 nodes in fp32 after casting: this measures "
            "fp16 weights and the fp32 islands, not GPU fp16 arithmetic"
        )
    return out
