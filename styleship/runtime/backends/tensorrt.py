"""TensorRT engines (built by `styleship build`), run with the name-based API.

`set_input_shape` / `set_tensor_address` / `execute_async_v3` on a
non-default stream (TensorRT 10 and 11 share this API; the bindings API is
gone). Device buffers and pinned host buffers come from cuda-python and are
reused while the input shapes stay the same; with `cuda_graph=True` the
enqueue for a shape is captured once, after a plain run, and replayed until
the shapes change; a capture that fails turns graphs off for this instance
and plain enqueues carry on (`info().details["cuda_graph_off"]` says why).

The execution context allocates its scratch memory per selected profile
(ON_PROFILE_CHANGE), not the largest profile's up front (STATIC, the
default). CUDA's current device is per thread, so every call that allocates
or enqueues sets it first: PyTriton runs inference on threads other than the
one that loaded the engine.

An engine built for another GPU, TensorRT version or ONNX file is refused
before deserialising, with the command that rebuilds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from styleship._lazy import require
from styleship.errors import BackendUnavailable, ModelError
from styleship.runtime.backends._cuda import (
    Buffers,
    GraphExec,
    Stream,
    capture_graph,
    gpu_identity,
    set_device,
)
from styleship.runtime.backends.base import BaseBackend
from styleship.runtime.bundle import Bundle
from styleship.runtime.engines import check_engine, pick_profile, rebuild_hint


def trt_major(trt) -> int:
    """TensorRT's major version, refusing those older than 10.

    It lives in the runtime, not in export/, because both loading (here) and
    building (export/tensorrt.py) need it, and the runtime must not depend on export.
    """
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise BackendUnavailable(
            f"TensorRT {trt.__version__} is too old: styleship builds with TensorRT 10 or 11"
        )
    return major


class TensorRTBackend(BaseBackend):
    name = "tensorrt"

    def __init__(self, cuda_graph: bool = False) -> None:
        super().__init__()
        self.cuda_graph = cuda_graph
        self.name = "tensorrt-graph" if cuda_graph else "tensorrt"
        self.precisions = {p: "engine" for p in ("fp32", "tf32", "fp16")}
        self._context = None
        self._stream: Stream | None = None
        self._shapes: tuple | None = None
        self._buffers: dict[str, Buffers] = {}
        self._graph: GraphExec | None = None
        self._graph_off = ""  # why captures stopped, once one failed
        self._index = 0

    @property
    def profiles(self) -> list | None:
        """The loaded engine's optimisation profiles (runtime/engines.py `check_fits`)."""
        return getattr(self, "_profiles", None)

    def _device_index(self, device: str) -> int:
        if not device.startswith("cuda"):
            raise BackendUnavailable(f"TensorRT runs on a CUDA GPU, not {device}")
        return int(device.split(":")[1]) if ":" in device else 0

    def _source(self, bundle: Bundle, graph: str, precision: str) -> Path:
        trt = require("tensorrt", "gpu")
        trt_major(trt)
        gpu = gpu_identity(self._device_index(self.device))
        path, entry = check_engine(bundle, graph, precision, gpu.tag, trt.__version__)
        self._profiles = entry["profiles"]
        self._gpu = gpu
        return path

    def _load(self, path: Path, device: str, precision: str) -> None:
        trt = require("tensorrt", "gpu")
        self._index = self._device_index(device)
        set_device(self._index)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ModelError(
                f"{path}: TensorRT cannot deserialise it; " + rebuild_hint(self.bundle, precision)
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.check_io_names(
            [n for n in names if is_input[n]], [n for n in names if not is_input[n]], path
        )
        self._dtypes = {
            n: _numpy_dtype(trt, self._engine.get_tensor_dtype(n), n, path) for n in names
        }
        self._context = _create_context(trt, self._engine)
        if self._context is None:
            raise ModelError(
                f"{path.name}: TensorRT could not create an execution context "
                "(out of GPU memory? see the TensorRT log above)"
            )
        self._stream = Stream()
        self._profile = None
        self._version = trt.__version__

    def _bind(self, inputs: dict[str, np.ndarray]) -> None:
        """Select the profile, set shapes and addresses; reuse buffers while shapes repeat."""
        shapes = tuple(sorted((n, a.shape) for n, a in inputs.items()))
        if shapes == self._shapes:
            return
        self._release_buffers()
        index = pick_profile(self._profiles, dict(shapes))
        if index != self._profile:
            if not self._context.set_optimization_profile_async(index, self._stream.handle):
                raise ModelError(
                    f"TensorRT refused optimisation profile {index} for shapes {dict(shapes)} "
                    "(see the TensorRT log above)"
                )
            self._profile = index
        for name, arr in inputs.items():
            if not self._context.set_input_shape(name, arr.shape):
                raise ModelError(f"TensorRT refused shape {arr.shape} for input {name!r}")
            self._buffers[name] = Buffers(arr.shape, self._dtypes[name])
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            self._buffers[name] = Buffers(shape, self._dtypes[name])
        for name, buf in self._buffers.items():
            self._context.set_tensor_address(name, int(buf.device))
        self._shapes = shapes

    def _enqueue(self) -> None:
        if self._graph is not None:
            self._graph.launch(self._stream)
            return
        if not self._context.execute_async_v3(self._stream.handle):
            raise ModelError("TensorRT failed to enqueue the engine")
        if self.cuda_graph and not self._graph_off:
            self._capture()

    def _capture(self) -> None:
        """Record one enqueue as a CUDA graph after a plain run (never capture a first run:
        it may allocate); a failed capture turns graphs off, plain enqueues carry on."""
        self._stream.synchronize()
        graph, why = capture_graph(
            self._stream, lambda: self._context.execute_async_v3(self._stream.handle)
        )
        if graph is None:
            self._graph_off = why
        self._graph = graph

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_device(self._index)  # this thread may not be the one that loaded the engine
        self._bind(inputs)
        for name, arr in inputs.items():
            self._buffers[name].upload(arr, self._stream)
        self._enqueue()
        for name in self._outputs:
            self._buffers[name].download(self._stream)
        self._stream.synchronize()
        return {name: self._buffers[name].host.copy() for name in self._outputs}

    def compute_fn(self, inputs: dict[str, np.ndarray]):
        """Inputs uploaded once; each call enqueues and synchronises (no copies)."""
        self.run(inputs)

        def call() -> None:
            set_device(self._index)
            self._enqueue()
            self._stream.synchronize()

        return call

    def _release_buffers(self) -> None:
        for buf in self._buffers.values():
            buf.close()
        self._buffers.clear()
        if self._graph is not None:  # it froze the old shapes and addresses
            self._graph.close()
            self._graph = None
        self._shapes = None

    def _close(self) -> None:
        set_device(self._index)
        if self._stream is not None:
            self._stream.synchronize()
        self._release_buffers()
        if self._stream is not None:
            self._stream.close()
        self._context = self._engine = self._runtime = None

    def _details(self) -> dict:
        gpu = getattr(self, "_gpu", None)
        details = {"gpu": gpu.name if gpu else None, "cuda_graph": self.cuda_graph}
        if self._graph_off:
            details["cuda_graph_off"] = self._graph_off
        return details


def _numpy_dtype(trt, dtype, name: str, path: Path) -> np.dtype:
    """The NumPy type of an engine tensor. `trt.nptype` knows none for BF16 or FP8 I/O and
    raises TypeError; that is one line saying so (styleship's graphs take and give fp32)."""
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError:
        raise ModelError(
            f"{path.name}: tensor {name!r} is {dtype}, which NumPy has no type for; "
            "styleship engines take and give fp32 (rebuild from the bundle's own graphs)"
        ) from None


def _create_context(trt, engine):
    """An execution context that allocates scratch memory for the profile in use.

    TensorRT 10 documents `create_execution_context(strategy)`; a build whose binding takes
    no strategy gets it through an IRuntimeConfig, the other documented route. None (out of
    memory) is returned as is for the caller to refuse.
    """
    strategy = trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE
    try:
        return engine.create_execution_context(strategy)
    except TypeError:
        if not hasattr(engine, "create_runtime_config"):
            raise
    config = engine.create_runtime_config()
    config.set_execution_context_allocation_strategy(strategy)
    return engine.create_execution_context(config)
