"""sha256 of files and of JSON-able values: the identity of weights, graphs and bundles."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(value: object) -> str:
    """Hash of a canonical JSON encoding (sorted keys), stable across processes."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
