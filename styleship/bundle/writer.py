"""The one writer of bundles: stage, add graphs, store each weight once, hash, write.

Export, both imports, `wrap`, `upgrade` and the split upgrade all write
through `BundleWriter`, so the layout has one owner:
- everything is staged in a temporary directory that replaces the bundle
  only when the whole write succeeded (`_atomic.staged_dir`);
- graphs are saved whole while steps run (each step may read or rewrite
  them), and `finish` moves their tensors into the shared WEIGHTS file
  (bundle/weights.py) once every graph exists;
- `files` is the sha256 of every file in the bundle but the manifest itself
  and derived engines, computed in one place (`flush`), which is also the
  only code that writes manifest.json.
Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from styleship import _atomic
from styleship._hashing import sha256_file
from styleship.bundle import weights
from styleship.bundle.manifest import (
    ENGINES,
    FORMAT_VERSION,
    MANIFEST,
    WEIGHTS,
    GraphInfo,
    Manifest,
    TensorSpec,
)
from styleship.bundle.reader import Bundle


def hash_files(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory` by relative POSIX path, but the manifest,
    dot-files (atomic-write temporaries) and the engines folder."""
    out = {}
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = f.relative_to(directory)
        if rel.parts[0] in (MANIFEST, ENGINES) or any(p.startswith(".") for p in rel.parts):
            continue
        out[rel.as_posix()] = sha256_file(f)
    return out


class BundleWriter:
    """A bundle being written in `stage`; `manifest` is filled in by the caller and the steps."""

    def __init__(self, stage: Path, manifest: Manifest) -> None:
        self.stage = Path(stage)
        self.manifest = manifest

    def add_graph(
        self,
        name: str,
        model,
        inputs: list[TensorSpec] | tuple[TensorSpec, ...],
        outputs: list[TensorSpec] | tuple[TensorSpec, ...],
    ) -> Path:
        """Save the fp32 ONNX `model` (a ModelProto, or None when `<name>.onnx` is already
        in the stage) as graph `name`; returns its path."""
        path = self.stage / f"{name}.onnx"
        if model is not None:
            _atomic.write_bytes(path, model.SerializeToString())
        self.manifest.graphs[name] = GraphInfo(
            name, tuple(inputs), tuple(outputs), {"fp32": path.name}
        )
        return path

    def add_precision(self, graph: str, precision: str, file: str) -> None:
        """List `file` (in the stage) as graph `graph` at `precision`."""
        self.manifest.graphs[graph].files[precision] = file

    def record(self, key: str, value: object) -> None:
        """A step's record under its own key of the manifest (parity, int8, split...)."""
        self.manifest.records[key] = value

    def flush(self) -> None:
        """Hash every file and write manifest.json: the only code that writes it."""
        self.manifest.format_version = FORMAT_VERSION
        self.manifest.files = hash_files(self.stage)
        _atomic.write_text(
            self.stage / MANIFEST, json.dumps(self.manifest.to_dict(), indent=2) + "\n"
        )

    def bundle(self) -> Bundle:
        """The staged bundle as the runtime reads it, for steps that run its graphs."""
        self.flush()
        return Bundle.load(self.stage, verify=False)

    def finish(self) -> Bundle:
        """Store each weight once in WEIGHTS, hash, write the manifest; the verified bundle."""
        packed = weights.pack(self.stage, self.manifest.graph_files())
        self.manifest.external_data = packed.to_dict() if packed else None
        self.flush()
        return Bundle.load(self.stage)


@contextlib.contextmanager
def create(out_dir: str | Path, manifest: Manifest, force: bool = False) -> Iterator[BundleWriter]:
    """Write a new bundle at `out_dir` (replacing one only with `force`)."""
    with _atomic.staged_dir(out_dir, overwrite=force) as stage:
        writer = BundleWriter(stage, manifest)
        yield writer
        writer.finish()


@contextlib.contextmanager
def rewrite(path: str | Path) -> Iterator[BundleWriter]:
    """Change an existing bundle: a verified copy is staged, the block edits it through the
    writer, and the result replaces the bundle atomically (an error leaves it untouched)."""
    path = Path(path)
    bundle = Bundle.load(path)
    with _atomic.staged_dir(path, overwrite=True) as stage:
        for f in path.iterdir():
            if f.is_dir():
                shutil.copytree(f, stage / f.name)
            else:
                shutil.copy2(f, stage / f.name)
        writer = BundleWriter(stage, Manifest.from_dict(bundle.manifest))
        yield writer
        writer.finish()


__all__ = ["WEIGHTS", "BundleWriter", "create", "hash_files", "rewrite"]
