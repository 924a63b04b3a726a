"""ONNX Runtime: the CPU provider, and the CUDA and TensorRT providers by name.

A requested provider that ONNX Runtime does not offer is an error: ORT would
otherwise fall back to the CPU silently (microsoft/onnxruntime#18597).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from styleship._lazy import require
from styleship.errors import BackendUnavailable, ModelError, first_line
from styleship.runtime.backends.base import BaseBackend
from styleship.runtime.bundle import Bundle
from styleship.runtime.engines import BUILD_MAX_BATCH, BUILD_SIZES

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# Precision -> bundle file, per provider. tf32 is the fp32 graph with TF32 maths
# allowed; the TensorRT EP runs fp32 only (backends/ort_trt.py says why).
PRECISIONS = {
    "cpu": {"fp32": "fp32", "fp16": "fp16", "int8": "int8"},  # fp16: parity checks only
    "cuda": {"fp32": "fp32", "tf32": "fp32", "fp16": "fp16"},
    "tensorrt": {"fp32": "fp32"},
}


def cpu_threads() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OrtBackend(BaseBackend):
    def __init__(
        self,
        provider: str = "cpu",
        threads: int | None = None,
        trt_sizes: tuple[int, ...] = BUILD_SIZES,
        trt_max_batch: int = BUILD_MAX_BATCH,
        **options,
    ) -> None:
        """`options` go to the provider as they are; `trt_sizes`/`trt_max_batch` are the
        TensorRT provider's profiles (as `styleship build --shapes/--max-batch`)."""
        super().__init__()
        self.provider = provider
        self.trt_sizes, self.trt_max_batch = tuple(trt_sizes), trt_max_batch
        self.name = f"ort-{'trt' if provider == 'tensorrt' else provider}"
        self.threads = threads
        self.options = options
        self.precisions = PRECISIONS[provider]
        self._session = None
        # ORT's CPU arena keeps each session's peak for the session's life. Exact tiling
        # holds one session per split graph, so it turns the arena off for them: otherwise
        # their peaks add up (measured: 19 GiB at 100 MP against a 10.5 GiB budget).
        self.memory_arena = True

    def load(
        self, bundle: Bundle, graph: str, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        if self.provider == "tensorrt" and precision == "fp16":
            from styleship.runtime.backends.ort_trt import FP16_REFUSED

            raise BackendUnavailable(FP16_REFUSED)  # why, not only "runs fp32"
        super().load(bundle, graph, device, precision)

    def _provider_options(self, precision: str, device_id: int) -> dict:
        """Per-provider settings: TF32 on request only, cuDNN's exhaustive algorithm search."""
        opts: dict = {"device_id": device_id}
        if self.provider == "cuda":
            opts |= {"use_tf32": int(precision == "tf32"), "cudnn_conv_algo_search": "EXHAUSTIVE"}
        elif self.provider == "tensorrt":
            from styleship.runtime.backends import ort_trt
            from styleship.runtime.style_cache import default_cache_dir

            key = ort_trt.cache_key(self.bundle.hash, self.graph, device_id)
            cache = default_cache_dir().parent / "ort-trt" / key
            cache.mkdir(parents=True, exist_ok=True)
            opts = ort_trt.provider_options(
                self.bundle, self.graph, device_id, cache, self.trt_sizes, self.trt_max_batch
            )
        return opts | self.options

    def _load(self, path: Path, device: str, precision: str) -> None:
        ort = require("onnxruntime", "cpu" if self.provider == "cpu" else "gpu")
        wanted = PROVIDERS[self.provider]
        available = ort.get_available_providers()
        if wanted not in available:
            extra = "cpu" if self.provider == "cpu" else "gpu"
            raise BackendUnavailable(
                f"ONNX Runtime here has no {wanted} (it has {', '.join(available)}); "
                f"install styleship[{extra}]"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads or cpu_threads()
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = self.memory_arena
        device_id = int(device.split(":")[1]) if ":" in device else 0
        chain = (
            [(wanted, self._provider_options(precision, device_id))]
            if self.provider != "cpu"
            else []
        )
        if self.provider == "tensorrt":
            chain.append(("CUDAExecutionProvider", {"device_id": device_id}))
        chain.append("CPUExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=chain)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelError(
                f"{path.name}: ONNX Runtime cannot load it ({first_line(exc, 200)})"
            ) from None
        if self._session.get_providers()[0] != wanted:
            raise BackendUnavailable(f"ONNX Runtime did not enable {wanted} for {path.name}")
        self.check_io_names(
            [i.name for i in self._session.get_inputs()],
            [o.name for o in self._session.get_outputs()],
            path,
        )
        self._version = ort.__version__

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self._outputs)
        if self.provider == "cpu":
            return dict(zip(names, self._session.run(names, inputs)))
        # On a GPU, bind inputs once and let ORT place outputs on the device,
        # copying them back in one step instead of per-run host round trips.
        binding = self._session.io_binding()
        for name, arr in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in names:
            binding.bind_output(name, "cuda", self.device_id)
        self._session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))

    def compute_fn(self, inputs: dict[str, np.ndarray]):
        if self.provider == "cpu":
            return super().compute_fn(inputs)
        # Inputs uploaded once, outputs left on the device: the call times the compute.
        ort = require("onnxruntime", "gpu")
        self.run(inputs)
        binding = self._session.io_binding()
        for name, arr in inputs.items():
            value = ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(arr), "cuda", self.device_id
            )
            binding.bind_ortvalue_input(name, value)
        for name in self._outputs:
            binding.bind_output(name, "cuda", self.device_id)

        def call() -> None:
            self._session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return call

    @property
    def device_id(self) -> int:
        return int(self.device.split(":")[1]) if ":" in self.device else 0

    def _close(self) -> None:
        self._session = None

    def _details(self) -> dict:
        providers = self._session.get_providers() if self._session else []
        details = {"providers": providers, "threads": self.threads or cpu_threads()}
        if self.provider == "tensorrt":
            from styleship.runtime.backends.ort_trt import TF32_NOTE

            details |= {"tf32": TF32_NOTE, "profile_sizes": list(self.trt_sizes)}
        return details
