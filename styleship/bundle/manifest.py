"""The typed bundle manifest (docs/bundle.md): what `manifest.json` holds, in one place.

Like timm's `PretrainedCfg`, the fields a runtime relies on are declared here
with their types and defaults, and `to_dict`/`from_dict` are the only code
that turns them into JSON and back. What each export step records about
itself (parity, fp16, int8, split, memory, the style bank...) lives in
`records` under its own key: the step owns its content, the manifest owns
where it goes. A version-1 manifest reads into the same type unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORMAT = "styleship-bundle"
FORMAT_VERSION = 2  # 2: the graphs keep their large tensors once, in WEIGHTS
MANIFEST = "manifest.json"
WEIGHTS = "weights.bin"  # the ONNX external-data file every graph of a version-2 bundle shares
ENGINES = "engines"  # derived TensorRT plans: keyed by build.json, never in `files`


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as the manifest declares it (str dims are dynamic).

    `kind` tells the runtime what to feed: `content` or `style` images, the
    `strength` α, a `code` tensor produced by another graph, or a whole-image
    `statistic` (split graphs, runtime/exact_tiling.py); outputs are `code`,
    `image`, or a `feature` a statistic reduces.
    """

    name: str
    shape: tuple[int | str, ...]
    kind: str
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["kind"], d.get("dtype", "float32"))

    @property
    def value_key(self) -> str:
        """Where a caller's values dict holds this input: by kind, or by name for codes
        and statistics."""
        return self.name if self.kind in ("code", "statistic") else self.kind

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "kind": self.kind,
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class GraphInfo:
    """One graph: its inputs and outputs, and its ONNX file per precision."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: dict[str, str]  # precision -> file name

    @property
    def image_output(self) -> str:
        """The name of the graph's stylized-image output (found by kind, not by name)."""
        return next(t.name for t in self.outputs if t.kind == "image")

    @classmethod
    def from_dict(cls, name: str, d: dict) -> GraphInfo:
        return cls(
            name,
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            dict(d["files"]),
        )

    def to_dict(self) -> dict:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "files": dict(self.files),
        }


# Manifest keys with a typed field, in the order manifest.json lists them; every other key
# is a step's record and goes to `records`, written between `model_info` and `files`.
_TYPED = (
    "format_version",
    "name",
    "family",
    "description",
    "config",
    "created",
    "normalisation",
    "graphs",
    "style_code",
    "strength",
    "opset",
    "exporter",
    "versions",
    "weights",
    "model_info",
)


@dataclass
class Manifest:
    """Everything a runtime needs to know about a bundle (docs/bundle.md, manifest.json).

    `weights` is the provenance of the model's weights (sources, seeds,
    `untrained`); `external_data` says where the graphs keep their tensors
    (version 2: the shared WEIGHTS file); `files` is the sha256 of every file,
    filled in by the writer.
    """

    name: str
    family: str
    description: str = ""
    config: dict = field(default_factory=dict)
    created: str | None = None
    normalisation: dict = field(default_factory=dict)
    graphs: dict[str, GraphInfo] = field(default_factory=dict)
    style_code: dict[str, str] = field(default_factory=dict)
    strength: dict | None = None
    opset: int | None = None
    exporter: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    model_info: dict = field(default_factory=dict)
    records: dict[str, object] = field(default_factory=dict)
    external_data: dict | None = None
    files: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        """Any version up to FORMAT_VERSION; keys no field names become `records`."""
        known = {k: d[k] for k in _TYPED if k in d}
        known["graphs"] = {n: GraphInfo.from_dict(n, g) for n, g in d.get("graphs", {}).items()}
        extra = {"format", "external_data", "files", *_TYPED}
        return cls(
            **known,
            records={k: v for k, v in d.items() if k not in extra},
            external_data=d.get("external_data"),
            files=dict(d.get("files", {})),
        )

    def to_dict(self) -> dict:
        out: dict = {"format": FORMAT}
        for key in _TYPED:
            value = getattr(self, key)
            if key == "graphs":
                value = {n: g.to_dict() for n, g in value.items()}
            if value is not None:
                out[key] = value
        out |= self.records
        if self.external_data is not None:
            out["external_data"] = self.external_data
        out["files"] = dict(sorted(self.files.items()))
        return out

    def graph_files(self) -> list[str]:
        """Every ONNX file the graphs name, once each (an int8 style encoder may be its fp32
        file), sorted: the files whose tensors go to WEIGHTS."""
        return sorted({f for g in self.graphs.values() for f in g.files.values()})
