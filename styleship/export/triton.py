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
An ONNX model's version directory also gets the bundle's shared weights file
(format 2), which the graph names by a path relative to itself.
Torch-free: it only copies files and writes text.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from styleship import _atomic
from styleship.errors import InputError, ModelError
from styleship.runtime.bundle import WEIGHTS, Bundle, TensorSpec
from styleship.runtime.engines import BUILD_JSON, engine_name, pick_profile, read_build

PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64"}


def model_name(bundle: Bundle) -> str:
    """Triton model names: letters, digits, `_` and `-`; the bundle name without its suffix."""
    stem = bundle.name.rsplit(".", 1)[0] if "." in bundle.name else bundle.name
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def _dims(spec: TensorSpec) -> list[int]:
    """Per-request dims: the batch axis belongs to max_batch_size; named axes are -1."""
    return [d if isinstance(d, int) else -1 for d in spec.shape[1:]]


def _tensor(spec: TensorSpec, reshape: bool = True) -> str:
    """One input/output entry. A per-request scalar (α) is `dims: [1]` to Triton; the model
    itself sees none, so a model (not an ensemble) adds `reshape: { shape: [] }`.

    An ensemble must not repeat that reshape: Triton checks an ensemble tensor by its
    reshaped shape against the composing model's un-reshaped dims, and [-1] against
    [-1, 1] fails the whole repository ("inconsistent shape").
    """
    dims = _dims(spec)
    body = f'name: "{spec.name}" data_type: {DTYPES[spec.dtype]}'
    if not dims:
        return body + " dims: [ 1 ]" + (" reshape: { shape: [ ] }" if reshape else "")
    return body + f" dims: [ {', '.join(map(str, dims))} ]"


def _io(label: str, specs, reshape: bool = True) -> str:
    entries = ",\n".join(f"  {{ {_tensor(s, reshape)} }}" for s in specs)
    return f"{label} [\n{entries}\n]\n"


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
    profiles: int = 0,
) -> str:
    """A model's config.pbtxt; `profiles` > 0 lists a TensorRT plan's optimisation profiles
    in the instance group (Triton uses only profile 0 when none is listed)."""
    preferred = sorted({b for b in (2, 4, 8, max_batch) if b <= max_batch})
    profile = (
        " profile: [ " + ", ".join(f'"{i}"' for i in range(profiles)) + " ]" if profiles else ""
    )
    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
        + _io("input", inputs)
        + _io("output", outputs)
        + f"dynamic_batching {{ preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
        f"max_queue_delay_microseconds: {delay_us} }}\n"
        + f"instance_group [ {{ count: {instances} kind: {kind}{profile} }} ]\n"
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
        + _io("input", inputs, reshape=False)
        + _io("output", sty.outputs, reshape=False)
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
    # Resolve and check every model's file before writing any, so a refusal leaves no
    # half-written repository.
    sources = {g: _model_file(bundle, g, platform, engines, precision) for g in names}
    for graph, (_, _, built) in sources.items():
        if built is not None:
            _check_plan(bundle, graph, built, max_batch, warmup_sizes)
    repo.mkdir(parents=True, exist_ok=True)
    for graph, name in names.items():
        info = bundle.graph(graph)
        source, file_name, built = sources[graph]
        with _atomic.staged_dir(repo / name, overwrite=force) as stage:
            (stage / "1").mkdir()
            shutil.copyfile(source, stage / "1" / file_name)
            if file_name == "model.onnx" and WEIGHTS in bundle.files:
                # A format-2 graph reads its tensors from the weights file beside it.
                shutil.copyfile(bundle.path / WEIGHTS, stage / "1" / WEIGHTS)
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
                    profiles=len(built) if built else 0,
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


def _model_file(bundle, graph, platform, engines, precision) -> tuple[Path, str, list | None]:
    """(file to copy, its name in the repository, the plan's profiles from build.json)."""
    if platform == "onnxruntime_onnx":
        return bundle.graph_file(graph, precision), "model.onnx", None
    directory = Path(engines) if engines else None
    if directory is None:
        found = sorted((bundle.path / "engines").glob("*/build.json"))
        if len(found) != 1:
            raise InputError(
                "name the engines directory with --engines (found "
                f"{len(found)} under {bundle.path / 'engines'})"
            )
        directory = found[0].parent
    record = read_build(directory)
    name = engine_name(graph, precision)
    path = directory / name
    entry = record.get("engines", {}).get(name)
    if not path.is_file() or entry is None:
        raise ModelError(
            f"{path} is missing: styleship build {bundle.path} --precision {precision}"
        )
    if not entry.get("profiles"):
        raise ModelError(f"{directory / BUILD_JSON} lists no optimisation profiles for {name}")
    return path, "model.plan", entry["profiles"]


def _check_plan(bundle, graph: str, built: list, max_batch: int, warmup_sizes) -> None:
    """Refuse what a plan cannot load: a max_batch_size above every profile's largest batch
    (Triton fails at load), or warm-up sizes that fit no profile (the warm-up fails)."""
    batched = [t.name for t in bundle.graph(graph).inputs if t.shape and t.shape[0] == "batch"]
    limit = min((p[n]["max"][0] for p in built for n in batched if n in p), default=None)
    if limit is not None and max_batch > limit:
        raise InputError(
            f"--max-batch {max_batch} is above the {graph} engine's largest batch {limit} "
            f"(build.json): pass --max-batch {limit} or rebuild with "
            f"`styleship build {bundle.path} --max-batch {max_batch}`"
        )
    inputs = bundle.graph(graph).inputs
    spatial = [  # (input, axis) of every named axis but the batch: the image sides
        (t.name, i) for t in inputs for i, d in enumerate(t.shape) if isinstance(d, str) and i
    ]
    largest = max((p[n]["max"][i] for p in built for n, i in spatial if n in p), default=0)
    for size in warmup_sizes:
        shapes = {
            t.name: tuple(1 if d == "batch" else size if isinstance(d, str) else d for d in t.shape)
            for t in inputs
        }
        try:
            pick_profile(built, shapes)
        except ModelError:
            raise InputError(
                f"warm-up size {size} fits none of the {graph} engine's profiles (largest "
                f"side {largest}): pass --warmup at most {largest} or build with larger --shapes"
            ) from None
