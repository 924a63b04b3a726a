"""The model bundle format (DESIGN.md §4, docs/bundle.md), owned here and nowhere else.

- `manifest`: the typed manifest (`Manifest`, `GraphInfo`, `TensorSpec`) and
  the format's names (version, manifest and weights file names);
- `reader`: `Bundle`, which loads and verifies versions 1 and 2;
- `writer`: `BundleWriter`, the only code that writes bundles;
- `weights`: each tensor stored once, in one shared ONNX external-data file;
- `upgrade`: version 1 to 2 without changing a tensor.

Torch-free, like the runtime that reads bundles.
"""

from styleship.bundle.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    WEIGHTS,
    GraphInfo,
    Manifest,
    TensorSpec,
)
from styleship.bundle.reader import Bundle

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "WEIGHTS",
    "Bundle",
    "GraphInfo",
    "Manifest",
    "TensorSpec",
]
