"""The few CUDA runtime calls TensorRT needs, through cuda-python (NVIDIA's own samples' choice).

Device and pinned host buffers, a stream, CUDA graphs, and the GPU's identity.
Every call is checked: a CUDA error becomes a BackendUnavailable naming the call.

The current device is per host thread in CUDA, so whoever allocates or enqueues
on a thread calls `set_device` there first (PyTriton runs inference on worker
threads that never loaded anything).
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from styleship.errors import BackendUnavailable


def cudart():
    """cuda-python's runtime: `cuda.bindings.runtime` (12.6+), else the older `cuda.cudart`."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise BackendUnavailable(
                "cuda-python is not installed (pip install 'styleship[gpu]')"
            ) from None
    return runtime


def check(result, what: str):
    """Unpack a cuda-python result tuple (err, *values); raise on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendUnavailable(f"CUDA {what} failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    major: int
    minor: int

    @property
    def tag(self) -> str:
        """`sm90-nvidia-h200`: compute capability and GPU model, the key of engines and caches.

        The compute capability alone is not enough: NVIDIA advises against running a plan
        on another GPU model even of the same capability (tactics are timed on this one).
        """
        model = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "gpu"
        return f"sm{self.major}{self.minor}-{model}"


def set_device(index: int) -> None:
    """Make GPU `index` current for the calling thread (CUDA's current device is per thread)."""
    check(cudart().cudaSetDevice(index), "cudaSetDevice")


def gpu_identity(device: int = 0) -> GpuIdentity:
    rt = cudart()
    count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if device >= count:
        raise BackendUnavailable(f"no CUDA device {device} (found {count})")
    prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuIdentity(name, int(prop.major), int(prop.minor))


class Stream:
    """A non-default CUDA stream (the default stream adds synchronisation)."""

    def __init__(self) -> None:
        self.rt = cudart()
        self.handle = check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def synchronize(self) -> None:
        check(self.rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle is not None:
            self.rt.cudaStreamDestroy(self.handle)
            self.handle = None


class Buffers:
    """A device buffer and a pinned host array of one shape and dtype, reused across calls."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.rt = cudart()
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.device = check(self.rt.cudaMalloc(self.nbytes), "cudaMalloc")
        self._host_ptr = check(self.rt.cudaMallocHost(self.nbytes), "cudaMallocHost")
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self._host_ptr))
        self.host = np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        np.copyto(self.host, array, casting="same_kind")
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(
            self.rt.cudaMemcpyAsync(self.device, self._host_ptr, self.nbytes, kind, stream.handle),
            "cudaMemcpyAsync (host to device)",
        )

    def download(self, stream: Stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(
            self.rt.cudaMemcpyAsync(self._host_ptr, self.device, self.nbytes, kind, stream.handle),
            "cudaMemcpyAsync (device to host)",
        )

    def close(self) -> None:
        if self.device is not None:
            self.rt.cudaFree(self.device)
            self.rt.cudaFreeHost(self._host_ptr)
            self.device = None


class GraphExec:
    """An instantiated CUDA graph: launched on a stream, destroyed by `close`."""

    def __init__(self, rt, handle) -> None:
        self.rt, self.handle = rt, handle

    def launch(self, stream: Stream) -> None:
        check(self.rt.cudaGraphLaunch(self.handle, stream.handle), "cudaGraphLaunch")

    def close(self) -> None:
        if self.handle is not None:
            self.rt.cudaGraphExecDestroy(self.handle)
            self.handle = None


def capture_graph(stream: Stream, enqueue: Callable[[], bool]) -> tuple[GraphExec | None, str]:
    """Record what `enqueue` puts on `stream` as a CUDA graph and instantiate it.

    Returns (graph, "") or (None, why not): a capture that cannot begin, an enqueue that
    reports failure, or a capture CUDA invalidated (a synchronising call inside it, say)
    leaves the caller to run plain enqueues, as trtexec does. Capture mode is always ended
    and the recorded graph always destroyed (the instantiated one keeps what it needs).
    """
    rt = stream.rt
    mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    (err,) = _codes(rt.cudaStreamBeginCapture(stream.handle, mode))
    if err:
        return None, f"cudaStreamBeginCapture failed ({err})"
    ok = False
    try:
        ok = bool(enqueue())
    finally:
        err, graph = _codes(rt.cudaStreamEndCapture(stream.handle))
        if err or not ok:
            if graph:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()  # clear the capture's error: plain enqueues follow
    if err:
        return None, f"the capture was invalidated (cudaStreamEndCapture: {err})"
    if not ok:
        return None, "the enqueue failed while capturing"
    try:
        (err, handle) = _codes(rt.cudaGraphInstantiate(graph, 0))
    finally:
        rt.cudaGraphDestroy(graph)
    if err:
        return None, f"cudaGraphInstantiate failed ({err})"
    return GraphExec(rt, handle), ""


def _codes(result) -> tuple:
    """A cuda-python result as (error or 0, *values), without raising; a non-zero error stays
    cuda-python's enum, which prints its name."""
    err, *values = result if isinstance(result, tuple) else (result,)
    return (err if int(err) else 0, *values)
