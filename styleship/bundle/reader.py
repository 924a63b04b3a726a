"""Read and verify a model bundle (DESIGN.md §4, docs/bundle.md): manifest.json + ONNX graphs.

Loading checks the format version and the sha256 of every file the manifest
lists (the shared weights file of a version-2 bundle included), so a changed,
corrupt or missing file is one error line, never a silent wrong answer.
Version-1 bundles (every graph with its own weights) load unchanged;
`styleship upgrade` rewrites one as version 2 (bundle/upgrade.py).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from styleship._hashing import sha256_file, sha256_json
from styleship._jsonfile import read_versioned
from styleship.bundle.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    WEIGHTS,
    GraphInfo,
    Manifest,
)
from styleship.errors import InputError, ModelError


class Bundle:
    """A verified bundle directory."""

    def __init__(self, path: Path, manifest: dict) -> None:
        """`manifest` as manifest.json holds it; most callers want `Bundle.load`."""
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
            what = f"{name} (the weights every graph reads)" if name == WEIGHTS else name
            if not file.is_file():
                raise ModelError(f"{self.path}: {what} is missing; re-export the bundle")
            if sha256_file(file) != digest:
                raise ModelError(
                    f"{self.path}: {what} does not match its sha256 in the manifest "
                    "(corrupt or replaced); re-export the bundle"
                )

    @cached_property
    def meta(self) -> Manifest:
        """The manifest, typed (bundle/manifest.py)."""
        return Manifest.from_dict(self.manifest)

    @property
    def files(self) -> dict[str, str]:
        """File -> sha256 as verified on load: graphs, weights, checkpoint, style bank."""
        return self.meta.files

    def record(self, step: str) -> dict:
        """What an export step recorded (parity, int8, split, memory...); {} if it did not run."""
        return self.meta.records.get(step) or {}

    @property
    def format_version(self) -> int:
        """1: each graph embeds its weights; 2: the graphs share WEIGHTS."""
        return int(self.manifest["format_version"])

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
        return self.meta.graphs

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
