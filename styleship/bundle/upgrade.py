"""`styleship upgrade BUNDLE`: a version-1 bundle rewritten as version 2, tensors untouched.

Version 1 embeds every weight in every graph that uses it; version 2 keeps
each once in the shared WEIGHTS file (bundle/weights.py). The upgrade only
moves bytes: every graph, node and tensor value stays as exported, so the
outputs are bit-identical (`upgraded_from` keeps each graph's version-1
sha256, which its `external_data.embedded_sha256` must equal), and every
record (parity, int8 search, split check, memory) stays valid. The bundle's
hash changes with its files, so style caches and engines built from the old
files are rebuilt, as after any re-export. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from styleship.bundle.manifest import FORMAT_VERSION
from styleship.bundle.reader import Bundle
from styleship.bundle.writer import rewrite


@dataclass(frozen=True)
class Upgrade:
    """Sizes before and after (bytes of the files the manifest lists, manifest included)."""

    path: Path
    from_version: int
    to_version: int
    bytes_before: int
    bytes_after: int

    def to_dict(self) -> dict:
        return {
            "bundle": str(self.path),
            "from_version": self.from_version,
            "to_version": self.to_version,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
        }


def bundle_bytes(bundle: Bundle) -> int:
    files = [*bundle.manifest.get("files", {}), "manifest.json"]
    return sum((bundle.path / f).stat().st_size for f in files)


def upgrade(path: str | Path) -> Upgrade:
    """Rewrite the bundle at `path` as the current format version (nothing to do if it is)."""
    bundle = Bundle.load(path)
    before, version = bundle_bytes(bundle), bundle.format_version
    if version < FORMAT_VERSION:
        with rewrite(bundle.path) as writer:
            # What each graph file was: `external_data.embedded_sha256` must equal it.
            old = bundle.manifest["files"]
            graphs = {f: old[f] for f in writer.manifest.graph_files()}
            writer.record("upgraded_from", {"format_version": version, "graph_sha256": graphs})
        bundle = Bundle.load(path)
    return Upgrade(bundle.path, version, bundle.format_version, before, bundle_bytes(bundle))
