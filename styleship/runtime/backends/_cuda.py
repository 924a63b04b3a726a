"""The few CUDA runtime calls TensorRT needs, through cuda-python (NVIDIA's own samples' choice).

Device and pinned host buffers, a stream, and the GPU's identity. Every call
is checked: a CUDA error becomes a BackendUnavailable naming the call.
"""

from __future__ import annotations

import ctypes
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
        """`sm90` for compute capability 9.0: engines are only valid on this."""
        return f"sm{self.major}{self.minor}"


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
