"""Each weight stored once: the graphs of a bundle share one ONNX external-data file.

A bundle holds many graphs cut from the same weights: the stylizer, the fused
graph, the split graphs, fp16 twins whose fp32 islands keep fp32 tensors,
int8 twins whose float convolutions keep theirs. Embedded, each graph carries
its own copy. `pack` writes every tensor of at least MIN_BYTES once into
WEIGHTS, identical tensors (by sha256 of their bytes) at one offset, and
points each graph's tensor at it with ONNX's own external-data fields
(location, offset, length), so ONNX Runtime, OpenVINO and TensorRT's parser
read the graphs from their path as any external-data model. Offsets are
page-aligned (ALIGNMENT) so a runtime may map tensors straight from the file.

Values never change: a packed graph loads bit-identical tensors. Torch-free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from styleship import _atomic
from styleship.bundle.manifest import WEIGHTS
from styleship.errors import ModelError, first_line

MIN_BYTES = 1024  # smaller tensors stay inside their graph: sharing them saves nothing
ALIGNMENT = 4096


@dataclass(frozen=True)
class PackResult:
    """What `pack` wrote: tensors referenced from the graphs, unique ones stored, bytes."""

    graphs: int
    tensors: int
    unique: int
    bytes: int
    embedded_sha256: dict[str, str]  # graph file -> sha256 with its weights inside

    def to_dict(self) -> dict:
        return {
            "file": WEIGHTS,
            "min_tensor_bytes": MIN_BYTES,
            "alignment": ALIGNMENT,
            "graphs": self.graphs,
            "tensors": self.tensors,
            "unique_tensors": self.unique,
            "bytes": self.bytes,
            "embedded_sha256": dict(sorted(self.embedded_sha256.items())),
        }


def _tensors(model) -> Iterator:
    """Every initializer and constant-attribute tensor of `model`, subgraphs included."""
    from onnx import external_data_helper as ext

    yield from ext._get_all_tensors(model)


def embedded(path: Path):
    """The graph at `path` with its weights inside, as a version-1 bundle stores it: the
    external data read in and its location fields cleared (one ModelError line if the
    graph or its weights cannot be read). Packing is undone exactly: the serialized bytes
    of a packed graph's `embedded` form are those of the graph before packing."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # DecodeError, missing/short external data, ...
        raise ModelError(
            f"{path}: cannot read the graph or its weights ({first_line(exc)})"
        ) from None
    for tensor in _tensors(model):
        tensor.ClearField("data_location")
    return model


def embedded_sha256(path: Path) -> str:
    """sha256 of the graph with its weights inside: the same however the weights are stored."""
    return hashlib.sha256(embedded(path).SerializeToString()).hexdigest()


def _raw(tensor) -> bytes | None:
    """The tensor's bytes as ONNX's raw_data holds them; typed fields (float_data ...)
    become raw_data, the same values, so identical tensors share one entry either way."""
    from onnx import TensorProto, numpy_helper

    if tensor.data_location == TensorProto.EXTERNAL:  # kept outside the graph already
        return None
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    if tensor.data_type in (0, 8):  # undefined, strings: no fixed-size bytes
        return None
    array = numpy_helper.to_array(tensor)
    if array.nbytes < MIN_BYTES:
        return None
    return numpy_helper.from_array(array).raw_data


def pack(directory: Path, graph_files: Iterable[str]) -> PackResult | None:
    """Move the large tensors of `graph_files` (names in `directory`) into one shared WEIGHTS
    file; rewrite the graphs to point at it. Returns None (and removes WEIGHTS) when no
    tensor is large enough. Every graph is read whole first, so re-packing a packed
    directory works and gives the same bytes."""
    from onnx import TensorProto

    directory = Path(directory)
    names = sorted(set(graph_files))
    models = {name: embedded(directory / name) for name in names}
    identity = {n: hashlib.sha256(m.SerializeToString()).hexdigest() for n, m in models.items()}
    blob = bytearray()
    where: dict[str, tuple[int, int]] = {}
    referenced = 0
    for name in names:
        for tensor in _tensors(models[name]):
            raw = _raw(tensor)
            if raw is None or len(raw) < MIN_BYTES:
                continue
            digest = hashlib.sha256(raw).hexdigest()
            if digest not in where:
                blob.extend(b"\0" * (-len(blob) % ALIGNMENT))
                where[digest] = (len(blob), len(raw))
                blob.extend(raw)
            offset, length = where[digest]
            for typed in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                tensor.ClearField(typed)
            tensor.ClearField("raw_data")
            del tensor.external_data[:]
            for key, value in (("location", WEIGHTS), ("offset", offset), ("length", length)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = TensorProto.EXTERNAL
            referenced += 1
    if not where:
        (directory / WEIGHTS).unlink(missing_ok=True)
        for name in names:
            _atomic.write_bytes(directory / name, models[name].SerializeToString())
        return None
    _atomic.write_bytes(directory / WEIGHTS, bytes(blob))
    for name in names:
        _atomic.write_bytes(directory / name, models[name].SerializeToString())
    return PackResult(len(names), referenced, len(where), len(blob), identity)


def embedded_duplicates(directory: Path, graph_files: Iterable[str]) -> dict[str, list[str]]:
    """Tensors of MIN_BYTES or more that two or more graphs embed (sha256 -> 'file:tensor'
    names); empty for a packed bundle. Tensors kept in external data are not embedded."""
    import onnx

    found: dict[str, list[str]] = {}
    for name in sorted(set(graph_files)):
        model = onnx.load(str(Path(directory) / name), load_external_data=False)
        for tensor in _tensors(model):
            raw = _raw(tensor)
            if raw is not None and len(raw) >= MIN_BYTES:
                found.setdefault(hashlib.sha256(raw).hexdigest(), []).append(
                    f"{name}:{tensor.name}"
                )
    return {
        digest: where
        for digest, where in found.items()
        if len({w.split(":", 1)[0] for w in where}) > 1
    }
