"""PyTorch, eager or `torch.compile`: the reference the exported engines are measured against.

Benchmarks only: production never needs it. It runs the checkpoint the
bundle carries (`checkpoint.safetensors`), wrapped exactly as export wrapped it,
so it computes the same graph as the ONNX files. Precisions: fp32, tf32 (GPU),
and fp16/bf16 through autocast, which keeps reductions such as the
normalisation statistics in fp32.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np

from styleship._lazy import require
from styleship.errors import BackendUnavailable
from styleship.runtime.backends.base import BaseBackend
from styleship.runtime.bundle import Bundle

AUTOCAST = {"fp16": "float16", "bf16": "bfloat16"}


class TorchBackend(BaseBackend):
    def __init__(self, compile: bool = False, channels_last: bool = True) -> None:
        super().__init__()
        self.compile = compile
        self.channels_last = channels_last
        self.name = "torch-compile" if compile else "torch"
        self.precisions = {p: "checkpoint" for p in ("fp32", "tf32", "fp16", "bf16")}
        self._module = None
        self._order: list[str] = []

    def _source(self, bundle: Bundle, graph: str, precision: str) -> Path:
        if bundle.checkpoint is None:
            raise BackendUnavailable(
                f"{bundle.path} carries no checkpoint for the torch backend; re-export it"
            )
        return bundle.checkpoint

    def _load(self, path: Path, device: str, precision: str) -> None:
        torch = require("torch", "torch")
        from styleship.models.checkpoint import load_checkpoint
        from styleship.models.registry import get_family

        cuda = device.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise BackendUnavailable("torch here has no CUDA device")
        if precision in ("tf32", "fp16") and not cuda:
            raise BackendUnavailable(f"{precision} needs a CUDA GPU (torch on the CPU: fp32, bf16)")
        model, meta = load_checkpoint(path)
        graphs = {g.name: g for g in get_family(meta["family"]).graphs(model.config)}
        graph = graphs[self.graph]
        module = graph.wrap(model).eval().to(device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            torch.backends.cudnn.allow_tf32 = precision == "tf32"
            torch.backends.cudnn.benchmark = True
        self._order = [t.name for t in graph.inputs]
        self._module = torch.compile(module) if self.compile else module
        self._torch = torch
        self._version = torch.__version__

    def _autocast(self):
        if self.precision not in AUTOCAST:
            return nullcontext()
        dtype = getattr(self._torch, AUTOCAST[self.precision])
        return self._torch.autocast(self.device.split(":")[0], dtype=dtype)

    def _tensors(self, inputs: dict[str, np.ndarray]) -> list:
        out = []
        for name in self._order:
            t = self._torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self.device)
            if t.ndim == 4 and self.channels_last:
                t = t.contiguous(memory_format=self._torch.channels_last)
            out.append(t)
        return out

    def _forward(self, tensors: list) -> tuple:
        with self._torch.inference_mode(), self._autocast():
            outs = self._module(*tensors)
        return outs if isinstance(outs, tuple) else (outs,)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._forward(self._tensors(inputs))
        result = {}
        for name, t in zip(self._outputs, outs):
            t = t.detach().cpu()
            result[name] = (t.float() if t.is_floating_point() else t).numpy()
        return result

    def compute_fn(self, inputs: dict[str, np.ndarray]):
        self.run(inputs)
        tensors = self._tensors(inputs)
        if not self.device.startswith("cuda"):
            return lambda: self._forward(tensors)

        def call() -> None:
            self._forward(tensors)
            self._torch.cuda.synchronize(self.device)

        return call

    def _close(self) -> None:
        self._module = None

    def _details(self) -> dict:
        return {
            "compile": self.compile,
            "channels_last": self.channels_last,
            "threads": self._torch.get_num_threads() if self._module is not None else None,
        }
