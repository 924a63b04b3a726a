"""On a CUDA GPU without TensorRT: cuda-python's calls the TensorRT backend relies on, and the
torch backends that the GPU benchmark measures. Marked `gpu`; `make gpu-check` runs them.

The TensorRT backend's buffers, streams and CUDA graphs (runtime/backends/_cuda.py) are
plain CUDA runtime calls, so they are checked here for real, graph capture included; only
the engine itself needs TensorRT (tests/test_tensorrt.py).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from styleship.runtime.bundle import Bundle


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


HAVE_CUDA = _cuda_available()
try:
    HAVE_CUDA_PYTHON = importlib.util.find_spec("cuda.bindings") is not None
except ModuleNotFoundError:
    HAVE_CUDA_PYTHON = False

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA GPU (torch.cuda.is_available())"),
]
needs_cuda_python = pytest.mark.skipif(
    not HAVE_CUDA_PYTHON, reason="needs cuda-python (cuda.bindings)"
)


@needs_cuda_python
def test_gpu_identity_names_the_model_and_capability():
    import torch

    from styleship.runtime.backends._cuda import gpu_identity

    gpu = gpu_identity(0)
    major, minor = torch.cuda.get_device_capability(0)
    assert (gpu.major, gpu.minor) == (major, minor)
    assert gpu.name == torch.cuda.get_device_name(0)
    assert gpu.tag.startswith(f"sm{major}{minor}-") and " " not in gpu.tag


@needs_cuda_python
def test_buffers_round_trip_and_a_captured_graph_replays():
    from styleship.runtime.backends._cuda import Buffers, Stream, capture_graph, cudart, set_device

    set_device(0)
    rt = cudart()
    stream = Stream()
    data = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    src, dst = Buffers(data.shape, np.float32), Buffers(data.shape, np.float32)
    try:
        src.upload(data, stream)
        # cudaMalloc does not clear memory: give dst known contents before capturing.
        sentinel = np.full(data.shape, -7.0, np.float32)
        dst.upload(sentinel, stream)
        d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice

        def enqueue() -> bool:
            err, *_ = rt.cudaMemcpyAsync(dst.device, src.device, src.nbytes, d2d, stream.handle)
            return int(err) == 0

        graph, why = capture_graph(stream, enqueue)
        assert graph is not None, why
        dst.download(stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.host, sentinel)  # captured, not run
        graph.launch(stream)
        dst.download(stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.host, data)
        graph.close()
    finally:
        src.close(), dst.close(), stream.close()


@needs_cuda_python
def test_an_invalidated_capture_falls_back_and_the_stream_still_works():
    from styleship.runtime.backends._cuda import Buffers, Stream, capture_graph, cudart, set_device

    set_device(0)
    rt = cudart()
    stream = Stream()
    data = np.arange(64, dtype=np.float32)
    buf = Buffers(data.shape, np.float32)
    try:

        def illegal() -> bool:  # synchronising a capturing stream: CUDA invalidates the capture
            rt.cudaStreamSynchronize(stream.handle)
            return True

        graph, why = capture_graph(stream, illegal)
        assert graph is None and "invalidated" in why
        buf.upload(data, stream)  # plain work on the same stream runs as before
        buf.host[:] = 0
        buf.download(stream)
        stream.synchronize()
        np.testing.assert_array_equal(buf.host, data)
    finally:
        buf.close(), stream.close()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_torch_on_the_gpu_matches_onnxruntime_on_the_cpu(assets, precision):
    """What gpu-quick times: the demo bundle's checkpoint on CUDA, eager, against the exported
    fp32 graph on the CPU. fp16/bf16 autocast keeps the statistics in fp32: no overflow."""
    from styleship.compare import psnr
    from styleship.runtime.backends import create_backend

    bundle = Bundle.load(assets / "models" / "stvae-demo.stvae")
    rng = np.random.default_rng(0)
    feeds = {
        "content": rng.random((2, 3, 512, 512), dtype=np.float32),
        "style": rng.random((2, 3, 256, 256), dtype=np.float32),
        "alpha": np.ones(2, np.float32),
    }
    with create_backend("ort-cpu") as ref:
        ref.load(bundle, "fused")
        expected = ref.run(feeds)["image"]
    with create_backend("torch") as gpu:
        gpu.load(bundle, "fused", "cuda:0", precision)
        out = gpu.run(feeds)["image"]
    assert out.shape == expected.shape and np.isfinite(out).all()
    assert psnr(expected, out) >= {"fp32": 45.0, "fp16": 30.0, "bf16": 25.0}[precision]
