"""Export a checkpoint to a model bundle: ONNX graphs, checked, parity-gated.

Build each graph the family declares with the torch.onnx (dynamo) exporter
at a pinned opset with dynamic batch/height/width, and run the ONNX checker
and strict shape inference. Then the declared steps (export/steps.py) run on
the staged bundle, the first of them the parity gate: the staged bundle,
loaded through the production runtime (ONNX Runtime CPU), against PyTorch on
real images at two sizes, batch 2. The bundle appears only if all of that
passes: the bundle writer (styleship/bundle) stages it, stores each weight
once, and renames it into place.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from styleship import __version__
from styleship.bundle import writer
from styleship.bundle.manifest import GraphInfo, Manifest
from styleship.compare import compare
from styleship.errors import ExportError, InputError
from styleship.export.samples import default_parity_images, parity_feed
from styleship.export.steps import Plan, run_steps
from styleship.models.checkpoint import checkpoint_paths, load_checkpoint
from styleship.models.registry import SPATIAL_AXES, GraphDef, get_family
from styleship.runtime import image as im
from styleship.runtime.bundle import Bundle

OPSET = 18
EXPORTER = "torch.onnx.export(dynamo=True)"
PARITY_SIZES = (256, 384)
# fp32 tolerances on [0, 1] images (deploy.md §2); code tensors are checked relative to their
# scale; discrete code indices must agree, but for near-ties (equal similarity within float error).
IMAGE_ATOL, IMAGE_MIN_PSNR = 2e-3, 50.0
CODE_RTOL = 1e-4
INDEX_MIN_AGREEMENT = 0.999
MAX_BATCH, MAX_SIDE = 256, 8192
CHECKPOINT = "checkpoint"  # checkpoint.safetensors + checkpoint.json inside the bundle


def _dynamic_shapes(graph: GraphDef) -> tuple[dict, ...]:
    dims: dict[str, object] = {}
    for t in graph.inputs:
        for axis in t.shape:
            if isinstance(axis, str) and axis not in dims:
                if axis in SPATIAL_AXES:
                    dims[axis] = 8 * torch.export.Dim(f"{axis}_8", min=2, max=MAX_SIDE // 8)
                else:
                    dims[axis] = torch.export.Dim(axis, min=1, max=MAX_BATCH)
    return tuple(
        {i: dims[a] for i, a in enumerate(t.shape) if isinstance(a, str)} for t in graph.inputs
    )


def _finish_onnx(path: Path, graph: GraphDef, family: str) -> None:
    """Name dynamic axes as the manifest does, stamp metadata, check the graph."""
    import onnx

    model = onnx.load(str(path))
    declared = {t.name: t for t in (*graph.inputs, *graph.outputs)}
    for value in (*model.graph.input, *model.graph.output):
        for dim, axis in zip(value.type.tensor_type.shape.dim, declared[value.name].shape):
            if isinstance(axis, str):
                dim.ClearField("dim_value")
                dim.dim_param = axis
    for key, val in {
        "styleship.family": family,
        "styleship.graph": graph.name,
        "styleship.version": __version__,
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, val
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(
            f"{graph.name}: the exported graph fails the ONNX checker ({exc})"
        ) from None
    onnx.save(model, str(path))


def _export_graph(model: torch.nn.Module, graph: GraphDef, example: tuple, path: Path) -> None:
    wrapper = graph.wrap(model).eval()
    # The exporter logs optional-op notes (torchvision not installed, axis renames): noise here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper,
                example,
                dynamo=True,
                opset_version=OPSET,
                input_names=[t.name for t in graph.inputs],
                output_names=[t.name for t in graph.outputs],
                dynamic_shapes=_dynamic_shapes(graph),
                optimize=True,
                verbose=False,
            )
            program.save(str(path))
    except Exception as exc:  # the exporter raises many types; all mean "could not export"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{graph.name}: torch.onnx export failed ({first})") from exc


def _versions() -> dict[str, str]:
    out = {"styleship": __version__}
    for pkg in ("torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _feeds(graph: GraphDef, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {t.name: values[t.value_key] for t in graph.inputs}


def _parity(model, graphs, bundle: Bundle, contents, styles, log) -> dict:
    """ONNX Runtime (through the runtime's own backend) vs PyTorch, every graph, two sizes."""
    from styleship.runtime.backends import create_backend

    results, passed = [], True
    for size in PARITY_SIZES:
        values = parity_feed(contents, styles, size)
        for graph in graphs:
            feed = _feeds(graph, values)
            with torch.no_grad():
                ref_t = graph.wrap(model).eval()(
                    *(torch.from_numpy(feed[t.name]) for t in graph.inputs)
                )
            ref_t = ref_t if isinstance(ref_t, tuple) else (ref_t,)
            ref = {t.name: r.numpy() for t, r in zip(graph.outputs, ref_t)}
            values.update({t.name: ref[t.name] for t in graph.outputs if t.kind == "code"})
            with create_backend("ort-cpu") as backend:
                backend.load(bundle, graph.name)
                out = backend.run(feed)
            for t in graph.outputs:
                if t.kind == "indices":
                    agree = float(np.mean(ref[t.name] == out[t.name]))
                    passed &= agree >= INDEX_MIN_AGREEMENT
                    results.append(
                        {
                            "graph": graph.name,
                            "size": size,
                            "batch": 2,
                            "name": t.name,
                            "agreement": agree,
                            "passed": agree >= INDEX_MIN_AGREEMENT,
                        }
                    )
                    log(f"parity {graph.name} {t.name} @{size}: {agree:.4%} of indices agree")
                    continue
                if t.kind == "image":
                    diff = compare({t.name: ref[t.name]}, out, IMAGE_ATOL, IMAGE_MIN_PSNR)[0]
                else:  # code tensors: tolerance relative to the tensor's own scale
                    scale = float(np.abs(ref[t.name]).max()) or 1.0
                    diff = compare(
                        {t.name: ref[t.name] / scale},
                        {t.name: out[t.name] / scale},
                        CODE_RTOL,
                        None,
                    )[0]
                passed &= diff.passed
                results.append({"graph": graph.name, "size": size, "batch": 2, **diff.to_dict()})
                log(
                    f"parity {graph.name} {t.name} @{size}: max abs {diff.max_abs:.2e}"
                    f"{'' if t.kind != 'image' else f', PSNR {diff.psnr_db:.1f} dB'}"
                )
    return {
        "backend": "ort-cpu",
        "reference": "torch eager fp32 (CPU)",
        "images": [p.name for p in (*contents, *styles)],
        "tolerance": {
            "image_max_abs": IMAGE_ATOL,
            "image_min_psnr_db": IMAGE_MIN_PSNR,
            "code_max_rel": CODE_RTOL,
            "index_min_agreement": INDEX_MIN_AGREEMENT,
        },
        "results": results,
        "passed": passed,
    }


def export_bundle(
    checkpoint: str | Path,
    out_dir: str | Path,
    parity_images: tuple[Sequence[Path], Sequence[Path]] | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    fp16: bool = False,
    int8: bool = False,
    int8_min_psnr: float = 30.0,
    style_bank: str | Path | None = None,
    onnx_graphs: bool = True,
    tiling: bool = True,
) -> Path:
    """Export `checkpoint` to the bundle directory `out_dir`; returns its path.

    With `fp16`, each graph also gets a `.fp16.onnx` twin (export/fp16.py);
    with `int8`, the per-image graphs get `.int8.onnx` twins (export/int8.py),
    calibrated on every sample image. Both are compared with fp32 and
    recorded in the manifest. With `style_bank`, every painting in that
    folder is encoded into the bundle's style bank (export/style_bank.py).
    `tiling=False` leaves out the exact-tiling split graphs and the memory
    record. `onnx_graphs=False` writes a bundle for the torch backend alone
    (benchmarks): the checkpoint and the graphs' inputs and outputs, no ONNX.
    """
    model, meta = load_checkpoint(checkpoint)
    family = get_family(meta["family"])
    graphs = family.graphs(model.config)
    declared = family.declare(model.config)
    contents, styles = parity_images or default_parity_images()
    if len(contents) < 2 or len(styles) < 2:
        raise InputError("the parity check needs two content and two style images")
    out_dir = Path(out_dir)
    example = {
        "content": torch.rand(2, 3, 64, 48),
        "style": torch.rand(2, 3, 56, 64),
        "strength": torch.tensor([1.0, 0.5]),
    }
    manifest = Manifest(
        name=out_dir.name,
        family=family.name,
        description=family.description,
        config=meta["config"],
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        normalisation={
            "input": "RGB float32 NCHW in [0, 1]; normalisation happens inside the graph",
            "output": "RGB float32 NCHW in [0, 1]",
            "size_multiple": im.MULTIPLE,
            "min_side": im.MIN_SIDE,
            **declared.get("normalisation", {}),
        },
        strength=declared.get("strength"),
        style_code=family.style_code,
        opset=OPSET,
        exporter=EXPORTER,
        versions=_versions(),
        weights=meta["weights"],
        model_info={
            "parameters": sum(p.numel() for p in model.parameters()),
            **family.summary(model),
        },
        # The source checkpoint travels along, so the torch backend can run the
        # same weights for comparison (benchmarks); the runtime never reads it.
        records={"checkpoint": {"name": CHECKPOINT, "training": meta.get("training", {})}},
    )
    plan = Plan(
        parity=lambda bundle, log: _gate(_parity(model, graphs, bundle, contents, styles, log)),
        contents=contents,
        styles=styles,
        fp16=fp16,
        int8=int8,
        int8_min_psnr=int8_min_psnr,
        style_bank=Path(style_bank) if style_bank is not None else None,
        split=tiling,
        memory=tiling,
    )
    with writer.create(out_dir, manifest, force) as staged:
        for src, dst in zip(
            checkpoint_paths(checkpoint), checkpoint_paths(staged.stage / CHECKPOINT)
        ):
            shutil.copyfile(src, dst)
        for graph in graphs:
            if not onnx_graphs:  # the torch backend runs the checkpoint: graphs by I/O only
                staged.manifest.graphs[graph.name] = GraphInfo(
                    graph.name, tuple(graph.inputs), tuple(graph.outputs), {}
                )
                continue
            log(f"exporting {graph.name}")
            args = tuple(example[t.value_key] for t in graph.inputs)
            path = staged.stage / f"{graph.name}.onnx"
            _export_graph(model, graph, args, path)
            _finish_onnx(path, graph, family.name)
            staged.add_graph(graph.name, None, graph.inputs, graph.outputs)
            with torch.no_grad():
                outs = graph.wrap(model).eval()(*args)
            outs = outs if isinstance(outs, tuple) else (outs,)
            example.update({t.name: o for t, o in zip(graph.outputs, outs) if t.kind == "code"})
        if onnx_graphs:  # nothing to compare or convert without them
            run_steps(staged, plan, log)
    return out_dir


def _gate(record: dict) -> dict:
    """The parity record, or ExportError naming the worst output when it failed."""
    if not record["passed"]:
        worst = next(r for r in record["results"] if not r["passed"])
        detail = (
            f"{worst['agreement']:.4%} of indices agree"
            if "agreement" in worst
            else f"max abs {worst['max_abs']:.2e}"
        )
        raise ExportError(
            "ONNX Runtime output differs from PyTorch beyond tolerance "
            f"({worst['graph']} {worst['name']} @{worst['size']}: {detail})"
        )
    return record
