"""Parity of imported bundles against the original graphs, run directly by ONNX Runtime.

The reference is what the peer package runs: the original file in an ORT
session, one NHWC image at a time. Its declared 384² only admits 384²
content, so at other sizes the reference is the same file with the declared
height and width of its image input and output cleared (nothing else
changed: the network is fully convolutional). The bundle runs through the
runtime's own backend, batch 2, on the same images and codes.

Only the fp32 graphs are held against the originals (the bundle's int8
twins are styleship's own, held against its fp32 by export/int8.py).
Tolerances were set from what the graphs do, not what we would like:
- Magenta fp32 (QDQ folded): the float network without int8 activation
  rounding, so it differs from the int8 original by the quantisation error
  itself (≈ 28 dB).
- multistyle26 is a float graph: export's fp32 bar (50 dB).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from styleship.compare import compare
from styleship.errors import ExportError
from styleship.export.samples import default_parity_images, resized, square
from styleship.runtime.bundle import Bundle

SIZES = ((384, 384), (320, 512))  # (height, width): the release's size, and neither square nor 384
MIN_PSNR = 24.0  # Magenta fp32 (QDQ folded) against the int8 originals
CODE_MIN_COSINE = 0.995
FLOAT_MIN_PSNR = 50.0


def _session(path: Path, relax: bool = False):
    """The original graph in ORT; `relax` clears its declared image height and width."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    if relax:
        for value in (*model.graph.input, *model.graph.output):
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[3].dim_value == 3:
                dims[1].dim_param, dims[2].dim_param = "height", "width"
        del model.graph.value_info[:]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def _run_bundle(bundle: Bundle, graph: str, precision: str, feed: dict) -> dict:
    from styleship.runtime.backends import create_backend

    with create_backend("ort-cpu") as backend:
        backend.load(bundle, graph, "cpu", precision)
        return backend.run(feed)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(1, 2, 0)[None])


def _image_row(graph, precision, size, ref, out, min_psnr, log) -> dict:
    diff = compare({"image": ref}, {"image": out}, 1.0, min_psnr)[0]
    log(f"parity {graph} {precision} @{size[1]}×{size[0]}: PSNR {diff.psnr_db:.1f} dB")
    return {"graph": graph, "precision": precision, "size": list(size), **diff.to_dict()}


def _record(results: list[dict], tolerance: dict, images: list[Path]) -> dict:
    return {
        "backend": "ort-cpu",
        "reference": "the original ONNX files run by ONNX Runtime (CPU), one image at a time",
        "images": [p.name for p in images],
        "tolerance": tolerance,
        "results": results,
        "passed": all(r["passed"] for r in results),
    }


def check(record: dict) -> None:
    """Refuse a bundle whose graphs disagree with the originals beyond the tolerances."""
    if not record["passed"]:
        worst = next(r for r in record["results"] if not r["passed"])
        detail = (
            f"PSNR {worst['psnr_db']} dB"
            if "psnr_db" in worst
            else f"code cosine {worst['min_cosine']:.4f}"
        )
        raise ExportError(
            f"the imported {worst['graph']} ({worst['precision']}) differs from the original "
            f"graph beyond tolerance ({detail}); are these the files of the release?"
        )


def magenta_parity(bundle: Bundle, sources: dict[str, Path], log: Callable[[str], None]) -> dict:
    """Style codes at 256², stylizer at SIZES, fused at 384²: fp32 vs the originals."""
    contents, styles = default_parity_images()
    style = np.stack([square(p, 256) for p in styles])  # 256²: the in-graph resize is exact
    predict = _session(sources["predict"])
    ref_codes = np.concatenate(
        [
            predict.run(None, {predict.get_inputs()[0].name: _nhwc(s)})[0].reshape(1, 100)
            for s in style
        ]
    )
    results = []
    codes = _run_bundle(bundle, "style_encoder", "fp32", {"style": style})["style_code"]
    cosine = float(
        np.min(
            np.sum(codes * ref_codes, 1)
            / (np.linalg.norm(codes, axis=1) * np.linalg.norm(ref_codes, axis=1))
        )
    )
    log(f"parity style_encoder fp32: code cosine {cosine:.4f}")
    results.append(
        {
            "graph": "style_encoder",
            "precision": "fp32",
            "size": [256, 256],
            "name": "style_code",
            "min_cosine": round(cosine, 5),
            "max_abs": float(np.abs(codes - ref_codes).max()),
            "passed": cosine >= CODE_MIN_COSINE,
        }
    )
    for size in SIZES:
        transform = _session(sources["transform"], relax=size != (384, 384))
        names = [i.name for i in transform.get_inputs()]
        content = np.stack([resized(p, *size) for p in contents])
        ref = np.concatenate(
            [
                transform.run(None, {names[0]: _nhwc(c), names[1]: code.reshape(1, 1, 1, 100)})[0]
                for c, code in zip(content, ref_codes)
            ]
        ).transpose(0, 3, 1, 2)
        feed = {"content": content, "style_code": ref_codes}
        out = _run_bundle(bundle, "stylizer", "fp32", feed)["image"]
        results.append(_image_row("stylizer", "fp32", size, ref, out, MIN_PSNR, log))
        if size == (384, 384):
            feed = {"content": content, "style": style, "strength": np.ones(2, np.float32)}
            out = _run_bundle(bundle, "fused", "fp32", feed)["image"]
            results.append(_image_row("fused", "fp32", size, ref, out, MIN_PSNR, log))
    tolerance = {"image_min_psnr_db": MIN_PSNR, "code_min_cosine": CODE_MIN_COSINE}
    return _record(results, tolerance, [*contents, *styles])


def multistyle_parity(bundle: Bundle, source: Path, log: Callable[[str], None]) -> dict:
    """The stylizer (per-image weights, batch 2) vs the original at SIZES."""
    contents, _ = default_parity_images()
    original = _session(source)
    weights = np.zeros((2, 26), np.float32)
    weights[0, 3] = 1.0
    weights[1, [7, 12]] = 0.5
    results = []
    for size in SIZES:
        content = np.stack([resized(p, *size) for p in contents])
        ref = np.concatenate(
            [
                original.run(None, {"image": c[None], "style_weights": w})[0]
                for c, w in zip(content, weights)
            ]
        )
        out = _run_bundle(
            bundle, "stylizer", "fp32", {"content": content, "style_weights": weights}
        )
        results.append(_image_row("stylizer", "fp32", size, ref, out["image"], FLOAT_MIN_PSNR, log))
    return _record(results, {"image_min_psnr_db": FLOAT_MIN_PSNR}, contents)
