"""ONNX Runtime's TensorRT provider: its options, from the same profiles `styleship build` uses.

* Profiles: without `trt_profile_min/opt/max_shapes` the provider builds an
  engine for the shapes it has seen and rebuilds whenever an input leaves
  that range (minutes at full width). Giving it `build`'s nested profiles
  (runtime/engines.py) builds once for every size up to the largest.
* fp16: from the bundle's fp16 graph, whose fp32 islands keep the variance
  and covariance sums from overflowing. The provider's `trt_fp16_enable`
  stays off: it is TensorRT's weak-typing FP16 flag, which may run any layer,
  the islands included, in fp16. The provider builds weakly typed, so how
  much of the fp16 graph really runs in fp16 is for a GPU run to show (its
  time beside fp32's); the result is right either way.
* fp32 runs with TF32: TensorRT enables it by default and the provider has
  no option to clear it, so the backend's info says so beside every number.
* Caches: ORT never invalidates its engine cache when the model, ORT,
  TensorRT or the GPU changes, so the cache directory is keyed by all four.
"""

from __future__ import annotations

import importlib.metadata

from styleship.errors import BackendUnavailable
from styleship.runtime.bundle import Bundle
from styleship.runtime.engines import BUILD_MAX_BATCH, BUILD_SIZES, profiles

TF32_NOTE = "on: ONNX Runtime's TensorRT provider has no option to turn TF32 off"
FP16_NOTE = (
    "the fp16 graph's types with TensorRT's FP16 flag off: weak typing may run some fp16 "
    "layers in fp32, never the fp32 islands in fp16"
)


def cache_key(bundle_hash: str, graph: str, device_id: int) -> str:
    """Directory name for ORT's engine and timing caches: bundle, graph, ORT, TensorRT, GPU."""
    import onnxruntime

    trt = "system"  # libnvinfer from outside pip
    for dist in ("tensorrt-cu13", "tensorrt-cu12", "tensorrt"):  # the gpu extra's first
        try:
            trt = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        from styleship.runtime.backends._cuda import gpu_identity

        gpu = gpu_identity(device_id).tag  # compute capability and GPU model
    except BackendUnavailable:
        gpu = f"gpu{device_id}"
    return f"{bundle_hash[:16]}-{graph}-ort{onnxruntime.__version__}-trt{trt}-{gpu}"


def profile_shapes(
    bundle: Bundle,
    graph: str,
    sizes: tuple[int, ...] = BUILD_SIZES,
    max_batch: int = BUILD_MAX_BATCH,
    opt_batch: int = 1,
) -> dict[str, str]:
    """`trt_profile_{min,opt,max}_shapes`: every input of every profile, profiles in order
    ("name:1x3x16x16,...,name:1x3x16x16,..."): the provider reads a name's n-th
    occurrence as its shape in profile n."""
    min_side = bundle.manifest.get("normalisation", {}).get("min_side", 16)
    built = profiles(bundle.graph(graph), list(sizes), max_batch, min_side, opt_batch)
    return {
        f"trt_profile_{which}_shapes": ",".join(
            f"{name}:{'x'.join(map(str, dims[which]))}"
            for profile in built
            for name, dims in profile.items()
        )
        for which in ("min", "opt", "max")
    }


def provider_options(
    bundle: Bundle,
    graph: str,
    device_id: int,
    cache_dir,
    sizes: tuple[int, ...] = BUILD_SIZES,
    max_batch: int = BUILD_MAX_BATCH,
) -> dict:
    """The TensorrtExecutionProvider options for this graph (the precision is the file's)."""
    return {
        "device_id": device_id,
        "trt_fp16_enable": False,  # fp16 comes from the fp16 graph's types (module docstring)
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        **profile_shapes(bundle, graph, sizes, max_batch),
    }
