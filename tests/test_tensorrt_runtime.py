"""The TensorRT backend's calls into TensorRT and the CUDA runtime, against recording stand-ins.

Neither library runs here. The stand-ins implement the documented calls the
backend makes (TensorRT 10/11: `create_execution_context`, `set_input_shape`,
`set_tensor_address`, `execute_async_v3`; cuda-python's runtime: devices,
streams, memory, stream capture and graphs) on host memory, and record each
call with the thread and the device current on it, so the tests check what
the backend asks for and in which order. They stand for no engine and no timing.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import threading
import time
import types
from types import SimpleNamespace

import numpy as np
import pytest

from styleship.errors import ModelError
from styleship.runtime.backends import create_backend
from styleship.runtime.bundle import Bundle
from styleship.runtime.engines import engine_dir, engine_name, profiles

TRT_VERSION = "10.13.3.9"


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorStreamCaptureInvalidated = 901


class FakeCudart:
    """cuda-python's runtime on host memory: (err, value) tuples, a current device per thread."""

    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread-local")
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")

    def __init__(self, devices: int = 2) -> None:
        self.devices = devices
        self.calls: list[tuple] = []
        self.local = threading.local()
        self.memory: dict[int, ctypes.Array] = {}
        self.capturing: set[int] = set()
        self.end_capture_error = CudaError.cudaSuccess
        self.live_graphs: set[int] = set()
        self.live_execs: set[int] = set()
        self._next = 1

    @property
    def device(self) -> int:
        return getattr(self.local, "device", 0)  # CUDA's default on a new thread

    def _record(self, name: str, *args) -> None:
        self.calls.append((name, self.device, threading.get_ident(), *args))

    def _handle(self) -> int:
        self._next += 1
        return self._next

    def cudaGetDeviceCount(self):
        return CudaError.cudaSuccess, self.devices

    def cudaGetDeviceProperties(self, device):
        return CudaError.cudaSuccess, SimpleNamespace(name=b"Stand-in GPU\0", major=9, minor=0)

    def cudaSetDevice(self, device):
        self.local.device = device
        self._record("cudaSetDevice", device)
        return (CudaError.cudaSuccess,)

    def cudaStreamCreate(self):
        self._record("cudaStreamCreate")
        return CudaError.cudaSuccess, self._handle()

    def cudaStreamSynchronize(self, stream):
        return (CudaError.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        return (CudaError.cudaSuccess,)

    def _alloc(self, name: str, nbytes: int):
        buf = (ctypes.c_byte * max(nbytes, 1))()
        self.memory[ctypes.addressof(buf)] = buf
        self._record(name, nbytes)
        return CudaError.cudaSuccess, ctypes.addressof(buf)

    def cudaMalloc(self, nbytes):
        return self._alloc("cudaMalloc", nbytes)

    def cudaMallocHost(self, nbytes):
        return self._alloc("cudaMallocHost", nbytes)

    def cudaFree(self, ptr):
        self.memory.pop(int(ptr), None)
        return (CudaError.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(int(dst), int(src), nbytes)
        self._record("cudaMemcpyAsync", kind)
        return (CudaError.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream, mode):
        self._record("cudaStreamBeginCapture", mode)
        self.capturing.add(stream)
        return (CudaError.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        self.capturing.discard(stream)
        self._record("cudaStreamEndCapture")
        graph = self._handle()
        self.live_graphs.add(graph)
        # Like CUDA: an invalidated capture still hands back a graph handle to destroy.
        return self.end_capture_error, graph

    def cudaGraphInstantiate(self, graph, flags):
        self._record("cudaGraphInstantiate", flags)
        handle = self._handle()
        self.live_execs.add(handle)
        self.graph_work = self.pending_capture
        return CudaError.cudaSuccess, handle

    def cudaGraphLaunch(self, exec_, stream):
        self._record("cudaGraphLaunch")
        self.graph_work()  # replay what the captured enqueue would do
        return (CudaError.cudaSuccess,)

    def cudaGraphDestroy(self, graph):
        self.live_graphs.discard(graph)
        self._record("cudaGraphDestroy")
        return (CudaError.cudaSuccess,)

    def cudaGraphExecDestroy(self, exec_):
        self.live_execs.discard(exec_)
        self._record("cudaGraphExecDestroy")
        return (CudaError.cudaSuccess,)

    def cudaGetLastError(self):
        self._record("cudaGetLastError")
        return (CudaError.cudaSuccess,)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def _module(name: str) -> types.ModuleType:
    """A stand-in module that `importlib.util.find_spec` (the backend registry's probe) finds."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def _nptype(dtype):
    """Like `trt.nptype`: a NumPy type, or TypeError for types NumPy lacks (BF16, FP8)."""
    if dtype == "float32":
        return np.float32
    raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


def fake_tensorrt(
    rt: FakeCudart,
    bundle: Bundle,
    context_ok=True,
    capture_enqueue_ok=True,
    profile_ok=True,
    output_dtype="float32",
    enqueue_s=0.0,
):
    """TensorRT's runtime API as the backend uses it; the "engine" copies content to image.
    A plan's bytes name the graph it stands for (`stand-in plan: <graph>`)."""
    trt = _module("tensorrt")
    trt.__version__ = TRT_VERSION
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.ExecutionContextAllocationStrategy = SimpleNamespace(
        STATIC="STATIC", ON_PROFILE_CHANGE="ON_PROFILE_CHANGE"
    )
    trt.nptype = _nptype
    busy = {"now": 0, "most": 0}
    rt.busy = busy

    class Context:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}

        def set_optimization_profile_async(self, index, stream):
            rt._record("set_optimization_profile_async", index)
            return profile_ok  # documented: False when the profile cannot be set

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shapes["content"]

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def _work(self):
            nbytes = int(np.prod(self.shapes["content"])) * 4
            ctypes.memmove(self.addresses["image"], self.addresses["content"], nbytes)

        def execute_async_v3(self, stream):
            capturing = stream in rt.capturing
            rt._record("execute_async_v3", capturing)
            if capturing:
                rt.pending_capture = self._work  # recorded, not run
                return capture_enqueue_ok
            busy["now"] += 1  # a context serves one call at a time: count any overlap
            busy["most"] = max(busy["most"], busy["now"])
            time.sleep(enqueue_s)
            self._work()
            busy["now"] -= 1
            return True

    class Engine:
        def __init__(self, graph: str = "stylizer") -> None:
            info = bundle.graph(graph)
            self.names = [t.name for t in (*info.inputs, *info.outputs)]
            self.inputs = [t.name for t in info.inputs]
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "float32" if name in self.inputs else output_dtype

        def create_execution_context(self, strategy="STATIC"):
            rt._record("create_execution_context", strategy)
            return Context() if context_ok else None  # None: out of memory

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            rt._record("deserialize_cuda_engine")
            return Engine(data.decode().split(": ")[-1])

    trt.Runtime = Runtime
    return trt


@pytest.fixture
def stand_ins(bundle_copy, monkeypatch):
    """A bundle with recorded (stand-in) engines, and the two stand-in libraries installed:
    the stylizer's for sides up to 32 and 64 and batches up to 4, the style encoder's for
    the sides `encoder` and batch 1."""

    def install(encoder=(512,), **kw):
        bundle = Bundle.load(bundle_copy)
        rt = FakeCudart()
        tag = "sm90-stand-in-gpu"
        directory = engine_dir(bundle, tag, TRT_VERSION)
        directory.mkdir(parents=True, exist_ok=True)
        engines = {}
        for graph, sizes, batch in (("stylizer", [32, 64], 4), ("style_encoder", encoder, 1)):
            (directory / engine_name(graph, "fp32")).write_bytes(f"stand-in plan: {graph}".encode())
            engines[engine_name(graph, "fp32")] = {
                "onnx": f"{graph}.onnx",
                "onnx_sha256": bundle.manifest["files"][f"{graph}.onnx"],
                "weights_sha256": bundle.manifest["files"].get("weights.bin"),
                "profiles": profiles(bundle.graph(graph), sizes, batch, 16),
            }
        record = {
            "format": "styleship-engines",
            "format_version": 1,
            "tensorrt": TRT_VERSION,
            "gpu": {"tag": tag},
            "engines": engines,
        }
        (directory / "build.json").write_text(json.dumps(record))
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rt, bundle, **kw))
        monkeypatch.setitem(sys.modules, "cuda", _module("cuda"))  # the registry's probe
        monkeypatch.setattr("styleship.runtime.backends._cuda.cudart", lambda: rt)
        return bundle, rt

    return install


def _feeds(bundle: Bundle, side: int = 32, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(side)
    out = {}
    for t in bundle.graph("stylizer").inputs:
        shape = [batch if d == "batch" else side if isinstance(d, str) else d for d in t.shape]
        out[t.name] = rng.random(shape, dtype=np.float32)
    return out


def test_every_thread_that_allocates_or_enqueues_sets_the_device(stand_ins):
    bundle, rt = stand_ins()
    backend = create_backend("tensorrt")
    backend.load(bundle, "stylizer", "cuda:1", "fp32")
    feeds = _feeds(bundle)
    results = {}

    def worker() -> None:  # as PyTriton does: inference on a thread that loaded nothing
        results["out"] = backend.run(feeds)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    np.testing.assert_array_equal(results["out"]["image"], feeds["content"])
    work = [c for c in rt.calls if c[0] in ("cudaMalloc", "cudaMallocHost", "execute_async_v3")]
    assert {c[2] for c in work} == {thread.ident}  # buffers come with the first run
    assert {c[1] for c in work} == {1}, "allocated or enqueued on a device other than cuda:1"
    assert {c[1] for c in rt.calls if c[0] == "deserialize_cuda_engine"} == {1}
    backend.close()


def test_contexts_allocate_per_profile_and_out_of_memory_is_one_error(stand_ins):
    bundle, rt = stand_ins()
    with create_backend("tensorrt") as backend:
        backend.load(bundle, "stylizer", "cuda:0", "fp32")
    created = [c[3:] for c in rt.calls if c[0] == "create_execution_context"]
    assert created == [("ON_PROFILE_CHANGE",)]
    bundle, rt = stand_ins(context_ok=False)
    backend = create_backend("tensorrt")
    with pytest.raises(ModelError, match="could not create an execution context"):
        backend.load(bundle, "stylizer", "cuda:0", "fp32")


def test_cuda_graphs_replay_and_every_graph_is_destroyed(stand_ins):
    bundle, rt = stand_ins()
    backend = create_backend("tensorrt-graph")
    assert backend.cuda_graph and backend.name == "tensorrt-graph"
    backend.load(bundle, "stylizer", "cuda:0", "fp32")
    small, large = _feeds(bundle, 32), _feeds(bundle, 64)
    for feeds in (small, small, small, large, large):
        np.testing.assert_array_equal(backend.run(feeds)["image"], feeds["content"])
    names = rt.names()
    # Per shape: a plain run, then one capture; later runs of that shape replay it.
    assert names.count("cudaStreamBeginCapture") == 2
    assert names.count("cudaGraphLaunch") == 3
    assert [c[3] for c in rt.calls if c[0] == "execute_async_v3"] == [False, True] * 2
    assert not rt.live_graphs  # the captured graph goes once instantiated
    assert len(rt.live_execs) == 1  # the 32 px graph went with its buffers
    backend.close()
    assert not rt.live_execs
    assert "cuda_graph_off" not in backend.info().details


@pytest.mark.parametrize("failure", ["invalidated", "enqueue"])
def test_a_failed_capture_falls_back_to_plain_enqueues(stand_ins, failure):
    bundle, rt = stand_ins(capture_enqueue_ok=failure != "enqueue")
    if failure == "invalidated":
        rt.end_capture_error = CudaError.cudaErrorStreamCaptureInvalidated
    backend = create_backend("tensorrt-graph")
    backend.load(bundle, "stylizer", "cuda:0", "fp32")
    for side in (32, 32, 64):
        feeds = _feeds(bundle, side)
        np.testing.assert_array_equal(backend.run(feeds)["image"], feeds["content"])
    names = rt.names()
    assert names.count("cudaStreamBeginCapture") == 1  # no capture after one failed
    assert "cudaGraphInstantiate" not in names and "cudaGraphLaunch" not in names
    assert "cudaGetLastError" in names  # the capture's error is cleared
    assert [c[3] for c in rt.calls if c[0] == "execute_async_v3"] == [False, True, False, False]
    assert not rt.live_graphs
    why = backend.info().details["cuda_graph_off"]
    assert ("invalidated" in why) if failure == "invalidated" else ("enqueue failed" in why)
    backend.close()


def test_an_engine_with_bf16_io_is_one_line(stand_ins):
    bundle, _ = stand_ins(output_dtype="bfloat16")
    with pytest.raises(ModelError, match=r"^stylizer.fp32.plan: tensor 'image' is bfloat16, which"):
        create_backend("tensorrt").load(bundle, "stylizer", "cuda:0", "fp32")


def test_a_refused_optimisation_profile_is_an_error(stand_ins):
    bundle, _ = stand_ins(profile_ok=False)
    with create_backend("tensorrt") as backend:
        backend.load(bundle, "stylizer", "cuda:0", "fp32")
        with pytest.raises(ModelError, match="TensorRT refused optimisation profile 0"):
            backend.run(_feeds(bundle))


def test_one_engine_serves_one_call_at_a_time(stand_ins):
    """`serve` reaches one Stylizer's engines from two models' threads: the calls queue
    instead of sharing the context, its buffers and its stream."""
    bundle, rt = stand_ins(enqueue_s=0.05)
    backend = create_backend("tensorrt")
    backend.load(bundle, "stylizer", "cuda:0", "fp32")
    feeds = _feeds(bundle)
    outs: list = []
    threads = [threading.Thread(target=lambda: outs.append(backend.run(feeds))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outs) == 4 and rt.busy["most"] == 1
    for out in outs:
        np.testing.assert_array_equal(out["image"], feeds["content"])
    backend.close()


def test_profiles_that_cannot_take_the_requests_are_refused_at_start_up(stand_ins):
    """The stylizer engine takes sides up to 64 and batches up to 4 (stand_ins): `serve`
    with batches of 8 or `stylize --max-size 100` stop before any request, in one line."""
    from styleship.runtime.engines import check_fits

    bundle, _ = stand_ins()
    with create_backend("tensorrt") as backend:
        backend.load(bundle, "stylizer", "cuda:0", "fp32")
        check_fits(backend.profiles, "stylizer", 4, 64)
        check_fits(backend.profiles, "stylizer", 1, None)
        with pytest.raises(ModelError, match=r"batches up to 4 and sides up to 64, not batch 8;"):
            check_fits(backend.profiles, "stylizer", 8, None)
        with pytest.raises(ModelError, match=r"not batch 1 at 104×104; rebuild it"):
            check_fits(backend.profiles, "stylizer", 1, 104)
    check_fits(None, "stylizer", 64, 4096)  # engines without profiles take any shape


def test_a_stylizer_whose_style_encoder_cannot_take_its_styles_does_not_start(stand_ins):
    """The style is encoded at `style_size` (512): an encoder engine built for 256 fails
    when the Stylizer opens, not at the first style (tests/test_tensorrt.py's GPU test did)."""
    from styleship.runtime.stylizer import Stylizer

    bundle, _ = stand_ins(encoder=(256,))
    with pytest.raises(ModelError, match=r"style encoder engine's .* not batch 1 at 512×512"):
        Stylizer(bundle, "tensorrt", "cuda:0", "fp32", cache_dir=None)
    with Stylizer(bundle, "tensorrt", "cuda:0", "fp32", style_size=256, cache_dir=None) as st:
        st.check_engines(4, 60)  # 60 px pads to 64: the largest profile takes it
        with pytest.raises(ModelError, match="not batch 8;"):
            st.check_engines(8)
