"""The bundle reader, where the runtime has always imported it from.

The bundle format has one owner, `styleship.bundle` (docs/bundle.md); this
module re-exports its reader and types so existing imports keep working.
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
