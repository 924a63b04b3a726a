"""ONNX Runtime's TensorRT provider: its options, from the same profiles `styleship build` uses.

* Profiles: without `trt_profile_min/opt/max_shapes` the provider builds an
  engine for the shapes it has seen and rebuilds whenever an input leaves
  that range (minutes at full width). Giving it `build`'s nested profiles
  (runtime/engines.py) builds once for every size up to the largest.
* fp32 only. The provider builds weakly typed networks (its documented
  options have no strongly-typed switch), so fp16 would be one of two wrong
  things: with `trt_fp16_enable` TensorRT may run any layer in fp16, the fp32
  islands that keep variance and covariance sums from overflowing included;
  without it, the fp16 graph's layers may run fp32 kernels, and an "fp16" row
  would time fp32. Neither can be read back from the provider, so it refuses
  fp16 in one line; the native `tensorrt` backend builds fp16 strongly typed.
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
FP16_REFUSED = (
    "ort-trt runs fp32 only: ONNX Runtime's TensorRT provider builds weakly typed, so an fp16 "
    "row could not say which layers ran fp16; the tensorrt backend builds fp16 strongly typed"
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
        "trt_fp16_enable": False,  # weak typing's FP16 flag: never (module docstring)
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        **profile_shapes(bundle, graph, sizes, max_batch),
    }
