"""Style codes as users name them: mixing several, and refusing names that are nothing.

Kept apart from `Stylizer` so that the CLI can check `-s` values before any
engine is loaded (or timed for the first time), and the server and batch
jobs can mix codes without one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from styleship.errors import InputError
from styleship.runtime.bundle import Bundle
from styleship.runtime.style_bank import parse_spec


def mix_codes(
    codes: Sequence[dict[str, np.ndarray]], weights: Sequence[float], rules: dict[str, str]
) -> dict[str, np.ndarray]:
    """Convex combination of style codes: "linear" tensors mix as Σwx, "rms" as √(Σwx²)."""
    if len(codes) != len(weights):
        raise InputError(f"{len(codes)} styles but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise InputError("style weights must be non-negative numbers with a positive sum")
    w = w / w.sum()
    mixed = {}
    for name, rule in rules.items():
        stack = np.stack([c[name].astype(np.float64) for c in codes])
        wb = w.reshape(-1, *([1] * (stack.ndim - 1)))
        value = np.sqrt((wb * stack**2).sum(0)) if rule == "rms" else (wb * stack).sum(0)
        mixed[name] = value.astype(np.float32)
    return mixed


def unknown_style(bundle: Bundle, style: str | os.PathLike) -> InputError:
    """The one-line error for a style that is neither an image file nor a bank style."""
    names = bundle.style_bank.names
    if names:
        return InputError(
            f"style {os.fspath(style)!r} is neither an image file nor a style "
            f"in {bundle.name}'s bank ({', '.join(names)})"
        )
    return InputError(
        f"no such style image: {os.fspath(style)} (and {bundle.name} has no style bank)"
    )


def check_styles(bundle: Bundle, styles: Sequence[object]) -> None:
    """Refuse unknown style names before any engine is loaded or timed."""
    bank = bundle.style_bank
    for style in styles:
        if not isinstance(style, str | os.PathLike) or Path(style).is_file():
            continue
        spec = parse_spec(os.fspath(style))
        if not bank.names or spec is None or any(n not in bank for n, _ in spec):
            raise unknown_style(bundle, style)
