"""A Triton Inference Server model repository from a bundle (`styleship export-triton`).

Three models per bundle (deploy.md §5):
* `<name>_style`: style image -> style code tensors;
* `<name>`: content image + style code + α -> image, the serving path with a
  cached style (a client encodes a style once and sends its code);
* `<name>_pipeline`: an ensemble of the two for clients that send the style
  image with every request.
Images are batched by Triton (`max_batch_size`, dynamic batching); height
and width are -1 (any size that is a multiple of 8). Each model warms up at
the sizes given, so the first real request does not pay for tactic
selection. With `tensorrt_plan`, the engines must have been built on the
serving GPU type with the serving TensorRT version (`styleship build`).
Torch-free: it only copies files and writes text.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from styleship import _atomic
from styleship.errors import InputError, ModelError
from styleship.runtime.bundle import Bundle, TensorSpec
from styleship.runtime.engines import engine_name, read_build

PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64"}


def model_name(bundle: Bundle) -> str:
    """Triton model names: letters, digits, `_` and `-`; the bundle name without its suffix."""
    stem = bundle.name.rsplit(".", 1)[0] if "." in bundle.name else bundle.name
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def _dims(spec: TensorSpec) -> list[int]:
    """Per-request dims: the batch axis belongs to max_batch_size; named axes are -1."""
    return [d if isinstance(d, int) else -1 for d in spec.shape[1:]]


def _tensor(spec: TensorSpec) -> str:
    dims = _dims(spec)
    body = f'name: "{spec.name}" data_type: {DTYPES[spec.dtype]}'
    if not dims:  # a per-request scalar (α): Triton needs one dim, the model sees none
        return body + " dims: [ 1 ] reshape: { shape: [ ] }"
    return body + f" dims: [ {', '.join(map(str, dims))} ]"


def _io(label: str, specs) -> str:
    return f"{label} [\n" + ",\n".join(f"  {{ {_tensor(s)} }}" for s in specs) + "\n]\n"


def _warmup(specs, sizes: list[int], code_shapes: dict[str, list[int]]) -> str:
    blocks = []
    for size in sizes:
        inputs = []
        for s in specs:
            dims = _dims(s) or [1]
            dims = [size if d == -1 else d for d in dims]
            dims = code_shapes.get(s.name, dims)
            inputs.append(
                f'    inputs {{ key: "{s.name}" value: {{ data_type: {DTYPES[s.dtype]} '
                f"dims: [ {', '.join(map(str, dims))} ] random_data: true }} }}"
            )
        blocks.append(f'  {{ name: "warmup_{size}" batch_size: 1\n' + "\n".join(inputs) + "\n  }")
    return "model_warmup [\n" + ",\n".join(blocks) + "\n]\n"


def _config(
    name: str,
    platform: str,
    inputs,
    outputs,
    max_batch: int,
    delay_us: int,
    instances: int,
    kind: str,
    warmup: str,
) -> str:
    preferred = sorted({b for b in (2, 4, 8, max_batch) if b <= max_batch})
    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
        + _io("input", inputs)
        + _io("output", outputs)
        + f"dynamic_batching {{ preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
        f"max_queue_delay_microseconds: {delay_us} }}\n"
        + f"instance_group [ {{ count: {instances} kind: {kind} }} ]\n"
        + warmup
    )


def _ensemble(name: str, style_model: str, stylizer_model: str, bundle: Bundle, max_batch: int):
    enc, sty = bundle.graph("style_encoder"), bundle.graph("stylizer")
    inputs = [*enc.inputs, *(t for t in sty.inputs if t.kind != "code")]
    step1 = " ".join(f'input_map {{ key: "{t.name}" value: "{t.name}" }}' for t in enc.inputs)
    step1 += " " + " ".join(
        f'output_map {{ key: "{t.name}" value: "{t.name}" }}' for t in enc.outputs
    )
    step2 = " ".join(f'input_map {{ key: "{t.name}" value: "{t.name}" }}' for t in sty.inputs)
    step2 += " " + " ".join(
        f'output_map {{ key: "{t.name}" value: "{t.name}" }}' for t in sty.outputs
    )
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
        + _io("input", inputs)
        + _io("output", sty.outputs)
        + "ensemble_scheduling { step [\n"
        + f'  {{ model_name: "{style_model}" model_version: -1 {step1} }},\n'
        + f'  {{ model_name: "{stylizer_model}" model_version: -1 {step2} }}\n'
        + "] }\n"
    )


def export_triton(
    bundle_path: str | Path,
    repo: str | Path,
    platform: str = "onnxruntime_onnx",
    max_batch: int = 16,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "KIND_GPU",
    warmup_sizes: tuple[int, ...] = (512,),
    engines: str | Path | None = None,
    precision: str = "fp32",
    force: bool = False,
) -> list[Path]:
    """Write the three models into `repo`; returns their directories."""
    if platform not in PLATFORMS:
        raise InputError(f"platform must be one of {', '.join(PLATFORMS)}")
    if kind not in ("KIND_GPU", "KIND_CPU"):
        raise InputError("instance kind must be KIND_GPU or KIND_CPU")
    if platform == "tensorrt_plan" and kind != "KIND_GPU":
        raise InputError("TensorRT plans run on GPU instances only")
    bundle = Bundle.load(bundle_path)
    base = model_name(bundle)
    repo = Path(repo)
    styled = bundle.has_style_input  # wrapped bundles have the style in their weights
    names = {"style_encoder": f"{base}_style", "stylizer": base} if styled else {"stylizer": base}
    targets = [repo / n for n in names.values()] + ([repo / f"{base}_pipeline"] if styled else [])
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]} exists; pass --force to replace it")
    code_shapes = {
        t.name: [d for d in t.shape[1:]]
        for t in (bundle.graph("style_encoder").outputs if styled else ())
        if all(isinstance(d, int) for d in t.shape[1:])
    }
    repo.mkdir(parents=True, exist_ok=True)
    for graph, name in names.items():
        info = bundle.graph(graph)
        source, file_name = _model_file(bundle, graph, platform, engines, precision)
        with _atomic.staged_dir(repo / name, overwrite=force) as stage:
            (stage / "1").mkdir()
            shutil.copyfile(source, stage / "1" / file_name)
            warm = _warmup(info.inputs, list(warmup_sizes), code_shapes)
            _atomic.write_text(
                stage / "config.pbtxt",
                _config(
                    name,
                    platform,
                    info.inputs,
                    info.outputs,
                    max_batch,
                    max_queue_delay_us,
                    instances,
                    kind,
                    warm,
                ),
            )
    if not styled:
        return targets
    with _atomic.staged_dir(repo / f"{base}_pipeline", overwrite=force) as stage:
        (stage / "1").mkdir()  # ensembles have an empty version directory
        _atomic.write_text(
            stage / "config.pbtxt",
            _ensemble(f"{base}_pipeline", names["style_encoder"], base, bundle, max_batch),
        )
    return targets


def _model_file(bundle, graph, platform, engines, precision) -> tuple[Path, str]:
    if platform == "onnxruntime_onnx":
        return bundle.graph_file(graph, precision), "model.onnx"
    directory = Path(engines) if engines else None
    if directory is None:
        found = sorted((bundle.path / "engines").glob("*/build.json"))
        if len(found) != 1:
            raise InputError(
                "name the engines directory with --engines (found "
                f"{len(found)} under {bundle.path / 'engines'})"
            )
        directory = found[0].parent
    read_build(directory)
    path = directory / engine_name(graph, precision)
    if not path.is_file():
        raise ModelError(
            f"{path} is missing: styleship build {bundle.path} --precision {precision}"
        )
    return path, "model.plan"
