"""OpenVINO on the CPU: reads the bundle's ONNX directly, fp32, bf16 or int8.

int8 runs the bundle's QDQ graph. bf16 is not a separate file: OpenVINO runs
the fp32 graph with an inference precision hint, which on CPUs with AVX-512
BF16 or AMX roughly halves the latency. A CPU without native bf16 would
emulate it slowly, so asking for bf16 there is an error rather than a surprise.

Shapes: the graph compiled with dynamic height and width serves any size,
but OpenVINO plans better kernels for a fixed shape (vqvae-demo at 512²:
30 ms instead of 50 ms; Magenta int8 at 1 MP: 175 ms instead of 230 ms, same
output within 1e-5). A shape-specific compile costs 0.4 s (0.15 s from the
compiled-model cache), more than a few runs save, so the third time an input
shape is seen (video frames, a server at one size) a copy of the model
reshaped to it is compiled and kept, up to `shape_cache` shapes (least
recently used dropped first). A folder of photos of mixed sizes never pays a
compile per photo (measured on a folder of seven 1 MP photos: compiling on
the second sighting cost 0.7 s and saved 0.06 s). Compiled models are cached on disk under the
user cache dir (OpenVINO's CACHE_DIR), so a second process loads in a third
of the time, and the model as the load rewrites it is kept there as IR
(ir_path), so a later process reads no ONNX at all. Batch 1 only:
OpenVINO 2026.4 crashes the process (SIGSEGV) compiling vqvae-demo for a
fixed batch of 4 or 8 in f32, and a crash cannot be caught; batches keep the
dynamic model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from styleship._hashing import sha256_json
from styleship._lazy import require
from styleship.errors import BackendUnavailable, InputError, ModelError, first_line
from styleship.runtime.backends.base import BaseBackend
from styleship.runtime.backends.ort import cpu_threads
from styleship.runtime.heap import buffers_mapped
from styleship.runtime.style_cache import default_cache_dir

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
IR_VERSION = 1  # of what the load does to a bundle's graph (float_conv_outputs): bump on change
# int8 runs the bundle's QDQ graph (export --precision int8, or an imported int8 model):
# OpenVINO turns the Quantize/Dequantize pairs into int8 (VNNI) kernels; what stays float
# runs in f32.
# int8-bf16 runs the same QDQ graph with the bf16 hint: what stays float runs in bf16. On an
# AMX CPU that took Magenta at 1 MP from 178 to 126 ms for 0.1-0.4 dB (docs/int8.md).
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32", "int8-bf16": "bf16"}
STATIC_AFTER = 3  # sightings of a shape before it gets a shape-specific compile


DEQUANTIZE = ("Convert", "Convert", "Subtract", "Multiply")  # how OpenVINO reads a Q/DQ pair


def float_conv_outputs(model) -> int:
    """Drop the quantise-dequantise pair on each convolution's output, in place; returns
    how many.

    ONNX Runtime's quantiser writes one there (its integer kernels want an int8
    output), but what reads a convolution here is float: a norm, a residual
    sum. OpenVINO keeps the pair as separate passes over the whole feature map
    on a model compiled for dynamic shapes, and rounds the output to 8 bits for
    nothing. Without it the convolution still runs int8 and writes float.
    Measured on Magenta int8 (2-core EPYC): 512² dynamic 42.6 -> 33.9 ms,
    static 32.3 -> 31.3 ms, seven 1 MP photos 1.69 -> 1.28 s, and 40-42 ->
    48-49 dB against fp32 (docs/int8.md).

    Kept: a pair that a convolution reads (it is that convolution's int8
    input), and the pair after a convolution without a bias: on the VQ-VAE's
    one-hot lookup OpenVINO 2026.4 computed a wrong image without it (17 dB
    against fp32 instead of 39.5).
    """
    count = 0
    for fq in model.get_ordered_ops():
        if fq.get_type_name() != "FakeQuantize":
            continue
        source = fq.input_value(0)  # a convolution's output with its bias added
        bias = source.get_node()
        if bias.get_type_name() != "Add" or not any(
            v.get_node().get_type_name() == "Convolution" for v in bias.input_values()
        ):
            continue
        end = fq
        for op in DEQUANTIZE:
            users = list(end.output(0).get_target_inputs())
            if len(users) != 1 or users[0].get_node().get_type_name() != op:
                break
            end = users[0].get_node()
        else:
            readers = {t.get_node().get_type_name() for t in end.output(0).get_target_inputs()}
            if "Convolution" not in readers:  # else the pair is the next conv's int8 input
                end.output(0).replace(source)
                count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return count


def _port_name(port, wanted) -> str:
    """The port's name the manifest uses, where it has several: OpenVINO merges the names
    of tensors that an elided node joined (an output behind an Identity), and which one
    `get_any_name` gives can change between the ONNX model and its IR."""
    return next((n for n in sorted(port.get_names()) if n in wanted), port.get_any_name())


def model_cache_dir() -> str:
    """OpenVINO's compiled-model cache: keyed by OpenVINO on the model, config and device."""
    return str(default_cache_dir().parent / "openvino")


def ir_path(bundle, path: Path, version: str) -> Path | None:
    """Where the model of `path`, as the load rewrites it, is kept as OpenVINO IR.

    Reading the ONNX file and rewriting it took 105 ms and 45 MiB of a process
    that compiled Magenta int8 from OpenVINO's cache; compiling the kept IR
    took 50 ms and 34 MiB (2-core EPYC). The key is what the file holds (its
    bytes' sha256, and the shared weights file's size and modification time:
    bundles write files whole, by rename), IR_VERSION and OpenVINO's version.
    Not the manifest's hashes: a bundle loaded unverified may hold other files.
    None where the file cannot be read (the load then says why)."""
    weights = (bundle.manifest.get("external_data") or {}).get("file")
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        stat = (bundle.path / weights).stat() if weights else None
    except OSError:
        return None
    key = sha256_json(
        {
            "file": digest,
            "weights": [stat.st_size, stat.st_mtime_ns] if stat else None,
            "ir": IR_VERSION,
            "ov": version,
        }
    )
    return Path(model_cache_dir()) / "ir" / f"{key[:40]}.xml"


def save_ir(model, xml: Path) -> None:
    """Write `model` as IR at `xml` (and its .bin) atomically; a cache that cannot be
    written is skipped: the next load reads the ONNX file again."""
    import openvino as ov

    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=xml.parent) as tmp:
            staged = Path(tmp) / xml.name
            ov.save_model(model, str(staged), compress_to_fp16=False)
            # Same key, same content: a reader never pairs files of two different models.
            os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
            os.replace(staged, xml)
    except (OSError, RuntimeError):
        return


class OpenVinoBackend(BaseBackend):
    name = "openvino"

    def __init__(
        self, hint: str = "latency", threads: int | None = None, shape_cache: int = 4
    ) -> None:
        super().__init__()
        if hint not in HINTS:
            raise InputError(f"OpenVINO hint must be one of {', '.join(HINTS)}, not {hint!r}")
        self.hint = hint
        self.threads = threads
        self.shape_cache = shape_cache
        self.precisions = {"fp32": "fp32", "bf16": "fp32", "int8": "int8", "int8-bf16": "int8"}
        self._core = None
        self._model = None
        self._config: dict = {}
        self._request = None  # the dynamic-shape model's
        self._ir: Path | None = None  # the rewritten model, kept as OpenVINO IR (ir_path)
        self._static: OrderedDict[tuple, object] = OrderedDict()  # shapes -> infer request
        self._seen: dict[tuple, int] = {}
        self._float_outputs = 0

    def _load(self, path: Path, device: str, precision: str) -> None:
        ov = require("openvino", "openvino")
        if device != "cpu":
            raise BackendUnavailable(f"the openvino backend runs on the CPU, not {device}")
        core = ov.Core()
        core.set_property({"CACHE_DIR": model_cache_dir()})
        if OV_PRECISION[precision] == "bf16" and "BF16" not in core.get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        ):
            raise BackendUnavailable("this CPU has no native bf16 (AVX-512 BF16 or AMX)")
        config = {
            "PERFORMANCE_HINT": HINTS[self.hint],
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": self.threads or cpu_threads(),
        }
        self._core, self._config = core, config
        # A backend may load another graph: nothing of the last one may serve this one.
        self._model = None
        self._static.clear()
        self._seen.clear()
        self._ir = ir_path(self.bundle, path, ov.get_version())
        self._request = None
        if self._ir is not None and self._ir.is_file() and self._ir.with_suffix(".bin").is_file():
            with contextlib.suppress(ModelError):  # a damaged cache entry: read the ONNX
                self._request = self._compile(str(self._ir), "the IR cache")
                self._float_outputs = None  # applied when the IR was written
        if self._request is None:
            self._model = self._read(path)
            self._float_outputs = float_conv_outputs(self._model)
            if self._ir is not None:
                save_ir(self._model, self._ir)
            self._request = self._compile(self._model, f"{path.name}: OpenVINO cannot compile it")
        self.check_io_names(
            [_port_name(i, self._inputs) for i in self._request.model_inputs],
            [_port_name(o, self._outputs) for o in self._request.model_outputs],
            path,
        )
        self._version = ov.get_version()

    def _read(self, path: Path):
        try:
            return self._core.read_model(str(path))
        except RuntimeError as exc:
            raise ModelError(
                f"{path.name}: OpenVINO cannot read it ({first_line(exc, 200)})"
            ) from None

    def _compile(self, model, what: str):
        try:
            return self._core.compile_model(model, "CPU", self._config).create_infer_request()
        except RuntimeError as exc:
            raise ModelError(f"{what} ({first_line(exc, 200)})") from None

    def _request_for(self, inputs: dict[str, np.ndarray]):
        """The request compiled for these exact shapes when they recur, else the dynamic one."""
        key = tuple(sorted((name, arr.shape) for name, arr in inputs.items()))
        if key in self._static:
            self._static.move_to_end(key)
            return self._static[key]
        batch_1 = all(arr.shape[:1] == (1,) for arr in inputs.values())
        self._seen[key] = seen = self._seen.get(key, 0) + 1
        if seen < STATIC_AFTER or self.shape_cache <= 0 or not batch_1:
            return self._request
        if self._model is None:  # loaded from the IR cache: read it once a shape recurs
            self._model = self._read(self._ir)
        model = self._model.clone()
        model.reshape({name: list(shape) for name, shape in key})
        self._static[key] = self._compile(model, f"OpenVINO cannot compile shape {key}")
        if len(self._static) > self.shape_cache:
            self._static.popitem(last=False)
        return self._static[key]

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._request_for(inputs)
        # infer() copies the outputs out of the request's buffers (share_outputs=False), so
        # they stay valid after the next call; the inputs are only read during the call.
        # The dynamic-shape model reallocates its buffers for each new shape (heap.py).
        with buffers_mapped() if request is self._request else contextlib.nullcontext():
            result = request.infer(inputs, share_inputs=True)
        return {name: result[name] for name in self._outputs}

    def _close(self) -> None:
        self._request = None
        self._static.clear()
        self._seen.clear()
        self._model = None

    def _details(self) -> dict:
        return {
            "hint": self.hint,
            "threads": self.threads or cpu_threads(),
            "static_shapes": [dict(k) for k in self._static],
            "float_conv_outputs": self._float_outputs,
            "ir_cache": str(self._ir) if self._ir else None,
        }
