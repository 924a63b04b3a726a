"""Build TensorRT engines from a bundle's ONNX graphs (TensorRT 10 and 11).

What differs between the two (deploy.md §1): TensorRT 10 still has the FP16
builder flag (weak typing) and an opt-in STRONGLY_TYPED network flag;
TensorRT 11 is always strongly typed, so precision comes from the ONNX
tensor types. One code path serves both: fp16 is always built from the
bundle's fp16 graph, strongly typed (`export --precision fp16` makes it).
The FP16 flag on the fp32 graph is never used, even where TensorRT 10 still
has it: weak typing would be free to run the variance and covariance chains
(sums of H·W products) in fp16, which overflows at 512-1024 px, while the
fp16 graph keeps them in fp32 and strong typing obeys it. TF32 is on by
default in both, so fp32 clears it.

Builds run on GPU `device` (made current first: TensorRT builds on the
current device). Engines are written atomically with a `build.json`
(runtime/engines.py), in a directory keyed by the GPU model as well as its
compute capability, and skipped when an engine with the same key exists. A
timing cache file in the engines directory is reused and updated across
builds; one TensorRT refuses (another version or GPU wrote it) is replaced,
and `build.json` says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from styleship import __version__, _atomic
from styleship._hashing import sha256_json
from styleship._lazy import require
from styleship.errors import ExportError, InputError, ModelError
from styleship.runtime.backends._cuda import GpuIdentity, gpu_identity, set_device
from styleship.runtime.backends.tensorrt import trt_major
from styleship.runtime.bundle import WEIGHTS, Bundle
from styleship.runtime.engines import (
    BUILD_FORMAT,
    BUILD_JSON,
    BUILD_MAX_BATCH,
    BUILD_SIZES,
    BUILD_VERSION,
    engine_dir,
    engine_name,
    profiles,
)

PRECISIONS = ("fp32", "tf32", "fp16")
GRAPHS = ("style_encoder", "stylizer", "fused")
TIMING_CACHE = "timing.cache"


def _source(bundle: Bundle, graph: str, precision: str) -> tuple[str, bool]:
    """(ONNX file name, strongly typed?) for this graph and precision."""
    files = bundle.graph(graph).files
    if precision != "fp16":
        return files["fp32"], False
    if "fp16" not in files:
        raise ExportError(
            f"fp16 engines are built from the bundle's fp16 graph (its fp32 islands keep "
            f"variances and covariances from overflowing) and {graph!r} has none: run "
            "`styleship export CHECKPOINT --precision fp16` first"
        )
    return files["fp16"], True


def _parse(trt, builder, logger, onnx_path: Path, strongly_typed: bool, major: int):
    flags = 0
    if strongly_typed and major == 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise ModelError(
            f"{onnx_path.name}: TensorRT cannot parse it ({errors[0] if errors else 'no detail'})"
        )
    return network, parser


def _config(trt, builder, precision: str, workspace_mib: int, level: int):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib * 2**20)
    config.builder_optimization_level = level
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # strict fp32: TF32 is on by default
    return config


def _timing_cache(config, cache_file: Path, log: Callable[[str], None]) -> str:
    """Give the builder the cache on disk, or a fresh one if TensorRT refuses it; returns
    what happened ("reused", "refused", "new") for build.json."""
    data = cache_file.read_bytes() if cache_file.is_file() else b""
    if data:
        cache = config.create_timing_cache(data)
        # ignore_mismatch=False: a cache from another TensorRT or GPU is refused, not mixed in.
        if cache is not None and config.set_timing_cache(cache, False):
            return "reused"
        log(f"{cache_file}: TensorRT refused this timing cache; starting a fresh one")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise ExportError("TensorRT refused an empty timing cache (see the TensorRT log above)")
    return "refused" if data else "new"


def build_engines(
    bundle_path: str | Path,
    precision: str = "fp16",
    sizes: tuple[int, ...] = BUILD_SIZES,
    max_batch: int = BUILD_MAX_BATCH,
    opt_batch: int | tuple[int, ...] = 1,
    workspace_mib: int = 4096,
    optimization_level: int = 3,
    graphs: tuple[str, ...] = GRAPHS,
    force: bool = False,
    device: int = 0,
    log: Callable[[str], None] = lambda msg: None,
) -> Path:
    """Build one engine per graph into `engines/<sm>-trt<version>/`; returns that directory."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}")
    if not 0 <= optimization_level <= 5:
        raise InputError("the builder optimisation level is 0 to 5")
    trt = require("tensorrt", "gpu")
    major = trt_major(trt)
    gpu = gpu_identity(device)
    set_device(device)  # TensorRT builds on the current device: make it the one tagged
    bundle = Bundle.load(bundle_path)
    min_side = bundle.meta.normalisation.get("min_side", 16)
    directory = engine_dir(bundle, gpu.tag, trt.__version__)
    directory.mkdir(parents=True, exist_ok=True)
    record_path = directory / BUILD_JSON
    record = (
        json.loads(record_path.read_text())
        if record_path.is_file()
        else {
            "format": BUILD_FORMAT,
            "format_version": BUILD_VERSION,
            "engines": {},
        }
    )
    record |= {
        "tensorrt": trt.__version__,
        "gpu": {"name": gpu.name, "tag": gpu.tag, "compute_capability": f"{gpu.major}.{gpu.minor}"},
        "styleship": __version__,
    }
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_file = directory / TIMING_CACHE
    for graph in (g for g in graphs if g in bundle.graphs):  # wrapped bundles: stylizer only
        onnx_name, strongly_typed = _source(bundle, graph, precision)
        graph_profiles = profiles(bundle.graph(graph), list(sizes), max_batch, min_side, opt_batch)
        settings = {
            "onnx": onnx_name,
            "onnx_sha256": bundle.files[onnx_name],
            # The graph reads its tensors from the shared weights file (format 2): an engine
            # is only as right as both.
            "weights_sha256": bundle.files.get(WEIGHTS),
            "precision": precision,
            "strongly_typed": strongly_typed or major >= 11,
            "profiles": graph_profiles,
            "workspace_mib": workspace_mib,
            "optimization_level": optimization_level,
        }
        key = sha256_json(settings | {"tensorrt": trt.__version__, "gpu": gpu.tag})
        name = engine_name(graph, precision)
        current = record["engines"].get(name, {}).get("key") == key
        if current and not force and (directory / name).is_file():
            log(f"{name}: up to date")
            continue
        log(f"building {name} (TensorRT {trt.__version__}, {gpu.name})")
        record["engines"][name] = _build_one(
            trt, builder, logger, bundle, directory, cache_file, graph, settings, major, gpu, log
        ) | {"key": key}
        _atomic.write_text(record_path, json.dumps(record, indent=2) + "\n")
    return directory


def _build_one(
    trt,
    builder,
    logger,
    bundle,
    directory,
    cache_file,
    graph,
    settings,
    major,
    gpu: GpuIdentity,
    log,
) -> dict:
    start = time.perf_counter()
    network, _parser = _parse(
        trt, builder, logger, bundle.path / settings["onnx"], settings["strongly_typed"], major
    )
    config = _config(
        trt,
        builder,
        settings["precision"],
        settings["workspace_mib"],
        settings["optimization_level"],
    )
    timing_cache = _timing_cache(config, cache_file, log)
    for profile_dims in settings["profiles"]:
        profile = builder.create_optimization_profile()
        for name, dims in profile_dims.items():
            profile.set_shape(name, dims["min"], dims["opt"], dims["max"])
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT could not build {graph} at {settings['precision']} "
            "(see the TensorRT log above)"
        )
    _atomic.write_bytes(directory / engine_name(graph, settings["precision"]), bytes(serialized))
    _atomic.write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    return settings | {
        "gpu_name": gpu.name,
        "timing_cache": timing_cache,
        "build_seconds": round(time.perf_counter() - start, 2),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
