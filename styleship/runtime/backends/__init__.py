"""The backend registry: a name -> engine table, so callers never branch on engines.

Each row names the class to import (lazily: a missing engine never breaks
import) and a probe saying why it is unavailable here, if it is.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

from styleship.errors import BackendUnavailable, InputError
from styleship.runtime.backends.base import Backend, BackendInfo, BaseBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendInfo",
    "BaseBackend",
    "available_backends",
    "create_backend",
]


def _ort_probe(provider: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install 'styleship[cpu]' or '[gpu]')"
        import onnxruntime

        if provider not in onnxruntime.get_available_providers():
            return f"this onnxruntime build has no {provider}"
        return None

    return probe


def _module_probe(module: str, extra: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'styleship[{extra}]')"
        return None

    return probe


def _tensorrt_probe() -> str | None:
    for module, what in (("tensorrt", "TensorRT"), ("cuda", "cuda-python")):
        if importlib.util.find_spec(module) is None:
            return f"{what} is not installed (pip install 'styleship[gpu]')"
    return None


@dataclass(frozen=True)
class BackendEntry:
    target: str  # "module:Class"
    options: dict = field(default_factory=dict)
    probe: Callable[[], str | None] = lambda: None
    default_device: str = "cpu"


BACKENDS: dict[str, BackendEntry] = {
    "ort-cpu": BackendEntry(
        "styleship.runtime.backends.ort:OrtBackend",
        {"provider": "cpu"},
        _ort_probe("CPUExecutionProvider"),
    ),
    "ort-cuda": BackendEntry(
        "styleship.runtime.backends.ort:OrtBackend",
        {"provider": "cuda"},
        _ort_probe("CUDAExecutionProvider"),
        "cuda:0",
    ),
    "ort-trt": BackendEntry(
        "styleship.runtime.backends.ort:OrtBackend",
        {"provider": "tensorrt"},
        _ort_probe("TensorrtExecutionProvider"),
        "cuda:0",
    ),
    "tensorrt": BackendEntry(
        "styleship.runtime.backends.tensorrt:TensorRTBackend",
        probe=_tensorrt_probe,
        default_device="cuda:0",
    ),
    # The same engines with each input shape's enqueue replayed as a CUDA graph: a row of
    # its own, so `--backend tensorrt-graph` and suites reach it and results say which ran.
    "tensorrt-graph": BackendEntry(
        "styleship.runtime.backends.tensorrt:TensorRTBackend",
        {"cuda_graph": True},
        _tensorrt_probe,
        "cuda:0",
    ),
    "openvino": BackendEntry(
        "styleship.runtime.backends.openvino:OpenVinoBackend",
        probe=_module_probe("openvino", "openvino"),
    ),
    # For comparison in benchmarks: runs the checkpoint a bundle carries.
    "torch": BackendEntry(
        "styleship.runtime.backends.torch:TorchBackend", probe=_module_probe("torch", "torch")
    ),
    "torch-compile": BackendEntry(
        "styleship.runtime.backends.torch:TorchBackend",
        {"compile": True},
        _module_probe("torch", "torch"),
    ),
}


def _entry(name: str) -> BackendEntry:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, list(BACKENDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)}){hint}")
    return BACKENDS[name]


def create_backend(name: str, **options) -> BaseBackend:
    """A fresh, unloaded backend; raises BackendUnavailable with the reason when it cannot run."""
    entry = _entry(name)
    reason = entry.probe()
    if reason:
        raise BackendUnavailable(f"backend {name} is unavailable: {reason}")
    module, cls = entry.target.split(":")
    return getattr(importlib.import_module(module), cls)(**{**entry.options, **options})


def default_device(name: str) -> str:
    return _entry(name).default_device


def available_backends() -> dict[str, str | None]:
    """Backend name -> None if usable here, else the reason it is not."""
    return {name: entry.probe() for name, entry in BACKENDS.items()}
