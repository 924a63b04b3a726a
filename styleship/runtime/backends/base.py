"""The one interface every inference engine implements (DESIGN.md §6).

`BaseBackend` owns the life cycle and the input checks; an engine writes only
`_load`, `_run` and `_close`, so every engine validates inputs the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from styleship.errors import BackendUnavailable, InputError, ModelError
from styleship.runtime.bundle import Bundle, TensorSpec


@dataclass(frozen=True)
class BackendInfo:
    """What ran: recorded beside every benchmark number."""

    backend: str
    device: str
    precision: str
    engine_version: str
    details: dict = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: str

    def load(
        self, bundle: Bundle, graph: str, device: str = "cpu", precision: str = "fp32"
    ) -> None: ...
    def inputs(self) -> dict[str, TensorSpec]: ...
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
    def info(self) -> BackendInfo: ...
    def close(self) -> None: ...


class BaseBackend:
    name: ClassVar[str] = "base"

    def __init__(self) -> None:
        # Precision a caller asks for -> the bundle file that serves it. "bf16" on
        # OpenVINO, say, runs the fp32 graph with a bf16 inference hint.
        self.precisions: dict[str, str] = {"fp32": "fp32"}
        self._inputs: dict[str, TensorSpec] = {}
        self._outputs: dict[str, TensorSpec] = {}
        self._loaded = False
        self.device = "cpu"
        self.precision = "fp32"
        # One call at a time per engine instance: a TensorRT context, its buffers and its
        # stream serve one call at a time, and `serve` reaches one Stylizer's engines from
        # two models' threads (`<name>_style` and `<name>`).
        self._lock = threading.Lock()

    def load(
        self, bundle: Bundle, graph: str, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        info = bundle.graph(graph)
        if precision not in self.precisions:
            raise BackendUnavailable(
                f"{self.name} runs {', '.join(self.precisions)}, not {precision}"
            )
        self._inputs = {t.name: t for t in info.inputs}
        self._outputs = {t.name: t for t in info.outputs}
        self.device, self.precision = device, precision
        self.bundle, self.graph = bundle, graph
        self._load(self._source(bundle, graph, precision), device, precision)
        self._loaded = True

    def _source(self, bundle: Bundle, graph: str, precision: str) -> Path:
        """The file this engine loads for `graph` at `precision`."""
        return bundle.graph_file(graph, self.precisions[precision])

    def inputs(self) -> dict[str, TensorSpec]:
        return dict(self._inputs)

    def outputs(self) -> dict[str, TensorSpec]:
        return dict(self._outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._loaded:
            raise ModelError(f"{self.name} backend: run() before load()")
        if set(inputs) != set(self._inputs):
            raise InputError(
                f"inputs {sorted(inputs)} do not match the graph's {sorted(self._inputs)}"
            )
        for name, spec in self._inputs.items():
            arr = inputs[name]
            if arr.dtype != np.dtype(spec.dtype):
                raise InputError(f"input {name!r} is {arr.dtype}, the graph takes {spec.dtype}")
            if arr.ndim != len(spec.shape) or any(
                isinstance(d, int) and d != n for d, n in zip(spec.shape, arr.shape)
            ):
                raise InputError(
                    f"input {name!r} has shape {arr.shape}, the graph takes {spec.shape}"
                )
        with self._lock:
            return self._run(inputs)

    def compute_fn(self, inputs: dict[str, np.ndarray]) -> Callable[[], None]:
        """A call that runs inference on `inputs` already placed where the engine reads them.

        The benchmark's compute-only view times this: on the CPU the arrays are
        already in place; GPU engines override it to upload once and to
        synchronise before returning, so the call's wall time is the compute.
        """
        self.run(inputs)  # validates once, outside the timed calls
        return lambda: self._run(inputs)

    def check_io_names(self, inputs: list[str], outputs: list[str], file: Path) -> None:
        """Refuse a graph whose I/O names differ from the manifest (a foreign file)."""
        if sorted(inputs) != sorted(self._inputs) or sorted(outputs) != sorted(self._outputs):
            raise ModelError(
                f"{file.name}: inputs {inputs} / outputs {outputs} differ from the manifest's "
                f"{list(self._inputs)} / {list(self._outputs)}; the file is not this bundle's"
            )

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load(self, path: Path, device: str, precision: str) -> None:
        raise NotImplementedError

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def info(self) -> BackendInfo:
        return BackendInfo(
            backend=self.name,
            device=self.device,
            precision=self.precision,
            engine_version=getattr(self, "_version", ""),
            details=self._details(),
        )

    def _details(self) -> dict:
        """Engine-specific facts recorded beside benchmark numbers (threads, providers, ...)."""
        return {}
