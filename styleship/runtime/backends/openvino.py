"""OpenVINO on the CPU: reads the bundle's ONNX directly, fp32 or bf16.

bf16 is not a separate file: OpenVINO runs the fp32 graph with an inference
precision hint, which on CPUs with AVX-512 BF16 or AMX roughly halves the
latency. A CPU without native bf16 would emulate it slowly, so asking for bf16
there is an error rather than a surprise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from styleship._lazy import require
from styleship.errors import BackendUnavailable, InputError, ModelError
from styleship.runtime.backends.base import BaseBackend
from styleship.runtime.backends.ort import cpu_threads

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoBackend(BaseBackend):
    name = "openvino"

    def __init__(self, hint: str = "latency", threads: int | None = None) -> None:
        super().__init__()
        if hint not in HINTS:
            raise InputError(f"OpenVINO hint must be one of {', '.join(HINTS)}, not {hint!r}")
        self.hint = hint
        self.threads = threads
        self.precisions = {"fp32": "fp32", "bf16": "fp32"}
        self._compiled = None
        self._request = None

    def _load(self, path: Path, device: str, precision: str) -> None:
        ov = require("openvino", "openvino")
        if device != "cpu":
            raise BackendUnavailable(f"the openvino backend runs on the CPU, not {device}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        ):
            raise BackendUnavailable("this CPU has no native bf16 (AVX-512 BF16 or AMX)")
        config = {
            "PERFORMANCE_HINT": HINTS[self.hint],
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": self.threads or cpu_threads(),
        }
        try:
            self._compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "error"
            raise ModelError(f"{path.name}: OpenVINO cannot compile it ({first})") from None
        self.check_io_names(
            [i.get_any_name() for i in self._compiled.inputs],
            [o.get_any_name() for o in self._compiled.outputs],
            path,
        )
        self._request = self._compiled.create_infer_request()
        self._version = ov.get_version()

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer(inputs)
        # The request reuses its output buffers on the next call: copy out.
        return {name: np.array(result[self._compiled.output(name)]) for name in self._outputs}

    def _close(self) -> None:
        self._request = None
        self._compiled = None

    def _details(self) -> dict:
        return {"hint": self.hint, "threads": self.threads or cpu_threads()}
