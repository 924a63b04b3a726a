"""Read and verify a model bundle (DESIGN.md §4): manifest.json + ONNX graphs.

Loading checks the format version and the sha256 of every file the manifest
lists, so a changed or corrupt file is an error, never a silent wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from styleship._hashing import sha256_file, sha256_json
from styleship._jsonfile import read_versioned
from styleship.errors import InputError, ModelError

FORMAT = "styleship-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: dict[str, str]  # precision -> file name

    @property
    def image_output(self) -> str:
        """The name of the graph's stylized-image output (found by kind, not by name)."""
        return next(t.name for t in self.outputs if t.kind == "image")


class Bundle:
    """A verified bundle directory."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Bundle:
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"not a model bundle directory: {path}")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ModelError(f"{path}: no {MANIFEST}; is this a bundle from `styleship export`?")
        manifest = read_versioned(manifest_path, FORMAT, FORMAT_VERSION, "bundle manifest")
        bundle = cls(path, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        for name, digest in self.manifest.get("files", {}).items():
            file = self.path / name
            if not file.is_file():
                raise ModelError(f"{self.path}: {name} is missing; re-export the bundle")
            if sha256_file(file) != digest:
                raise ModelError(
                    f"{self.path}: {name} does not match its sha256 in the manifest "
                    "(corrupt or replaced); re-export the bundle"
                )

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @cached_property
    def hash(self) -> str:
        """Identity of the bundle's contents: keys style caches and engine builds."""
        return sha256_json(self.manifest.get("files", {}))

    @cached_property
    def graphs(self) -> dict[str, GraphInfo]:
        out = {}
        for name, g in self.manifest.get("graphs", {}).items():
            out[name] = GraphInfo(
                name=name,
                inputs=tuple(TensorSpec.from_dict(t) for t in g["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in g["outputs"]),
                files=dict(g["files"]),
            )
        return out

    @property
    def style_code(self) -> dict[str, str]:
        """Code tensor -> mixing rule ("linear" or "rms")."""
        return dict(self.manifest.get("style_code", {}))

    @property
    def has_style_input(self) -> bool:
        """False for models without a style encoder (wrapped models, multistyle26)."""
        return "style_encoder" in self.graphs

    @cached_property
    def style_bank(self):
        """The named precomputed style codes the bundle carries (runtime/style_bank.py)."""
        from styleship.runtime.style_bank import StyleBank

        return StyleBank.load(self.path, self.manifest)

    @property
    def strength_rule(self) -> str:
        """How the style strength α applies: `input` (the stylizer graph takes it), `code`
        (the runtime moves the code toward the content's own code, as Magenta does), or
        `blend` (the output is blended with the content: graphs without an α input)."""
        declared = self.manifest.get("strength", {}).get("rule")
        if declared:
            return declared
        inputs = self.graph("stylizer").inputs
        return "input" if any(t.kind == "strength" for t in inputs) else "blend"

    @property
    def style_multiple(self) -> int:
        """What the runtime pads style images to (1: the style encoder takes any size)."""
        return int(self.manifest.get("normalisation", {}).get("style_size_multiple", 8))

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(height, width) for graphs that only take one image size, else None."""
        size = self.manifest.get("normalisation", {}).get("fixed_size")
        return (int(size[0]), int(size[1])) if size else None

    def graph(self, name: str) -> GraphInfo:
        if name not in self.graphs:
            raise ModelError(f"{self.path}: no graph {name!r} (has {', '.join(self.graphs)})")
        return self.graphs[name]

    def graph_file(self, name: str, precision: str = "fp32") -> Path:
        files = self.graph(name).files
        if precision not in files:
            raise InputError(
                f"{self.path}: graph {name!r} has no {precision} file "
                f"(has {', '.join(files)}); export it with --precision {precision}"
            )
        return self.path / files[precision]

    @property
    def checkpoint(self) -> Path | None:
        """The source checkpoint (safetensors + JSON) if the bundle carries it, for torch."""
        name = self.manifest.get("checkpoint", {}).get("name")
        return self.path / name if name else None

    @property
    def untrained(self) -> bool:
        """True for bundles whose weights are seeded random or untrained (tests, demo)."""
        return bool(self.manifest.get("weights", {}).get("untrained", False))
