"""A bundle's style bank: named, precomputed style codes (DESIGN.md §4 `styles/`).

Production users ship a fixed set of styles: the bank lets them stylize by
name (`--style starry_night`, or weighted names `starry_night:0.7,scream:0.3`)
without the painting or the style encoder, and lets models without a style
encoder (multistyle26's 26 built-in styles) name their styles at all.

Layout inside the bundle, every file hashed in the manifest:
- `styles/styles.json`: format, version, the code tensors' names, and one
  entry per style (name, source file name and sha256, style size);
- `styles/<code tensor>.npy`: that tensor for every style, stacked on a new
  first axis in the order of the entries (read with allow_pickle=False).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from styleship import _atomic
from styleship._jsonfile import read_versioned
from styleship.errors import InputError, ModelError

DIRECTORY = "styles"
INDEX = f"{DIRECTORY}/styles.json"
FORMAT = "styleship-style-bank"
FORMAT_VERSION = 1
RESERVED = ":,"  # they separate weighted names


def parse_spec(text: str) -> list[tuple[str, float]] | None:
    """`name` or `name:w,name:w` as (name, weight) pairs; None if it is not that form."""
    pairs = []
    for part in text.split(","):
        name, sep, weight = part.strip().partition(":")
        if not name:
            return None
        try:
            pairs.append((name, float(weight) if sep else 1.0))
        except ValueError:
            return None
    return pairs


@dataclass(frozen=True)
class StyleBank:
    """The styles of one bundle; empty when it carries none."""

    entries: tuple[dict, ...] = ()
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> [styles, ...]

    @classmethod
    def load(cls, path: Path, manifest: dict) -> StyleBank:
        if "style_bank" not in manifest:
            return cls()
        index = read_versioned(path / INDEX, FORMAT, FORMAT_VERSION, "style bank")
        codes = {}
        for name in index["code"]:
            try:
                codes[name] = np.load(path / DIRECTORY / f"{name}.npy", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ModelError(f"{path}: style bank tensor {name} unreadable ({exc})") from None
            if len(codes[name]) != len(index["styles"]):
                raise ModelError(f"{path}: style bank tensor {name} does not match its index")
        return cls(tuple(index["styles"]), codes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e["name"] for e in self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def code(self, name: str) -> dict[str, np.ndarray]:
        """One style's code, each tensor with a batch axis of 1."""
        i = self.names.index(name)
        return {t: v[i : i + 1] for t, v in self.codes.items()}

    def by_source(self, sha256: str, style_size: int) -> str | None:
        """The name of the style encoded from the file with this sha256 at this style size."""
        return next(
            (
                e["name"]
                for e in self.entries
                if e.get("source_sha256") == sha256 and e.get("style_size") == style_size
            ),
            None,
        )


def check_name(name: str) -> str:
    if not name or any(c in name for c in RESERVED) or name != name.strip():
        raise InputError(f"style name {name!r} is not usable: no ':' or ',' and no outer spaces")
    return name


def write_bank(stage: Path, entries: list[dict], codes: list[dict[str, np.ndarray]]) -> dict:
    """Write `styles/` into the staged bundle; returns the manifest's `style_bank` record
    (the bundle writer hashes the files with the others)."""
    names = [check_name(e["name"]) for e in entries]
    if len(set(names)) != len(names):
        raise InputError(f"two styles share a name in the bank: {', '.join(sorted(names))}")
    if not entries:
        raise InputError("the style bank has no styles")
    (stage / DIRECTORY).mkdir(exist_ok=True)
    tensors = sorted(codes[0])
    for tensor in tensors:
        buf = io.BytesIO()
        np.save(buf, np.concatenate([c[tensor] for c in codes]).astype(np.float32))
        _atomic.write_bytes(stage / DIRECTORY / f"{tensor}.npy", buf.getvalue())
    index = {"format": FORMAT, "format_version": FORMAT_VERSION, "code": tensors, "styles": entries}
    _atomic.write_text(stage / INDEX, json.dumps(index, indent=2) + "\n")
    return {"index": INDEX, "names": names}
