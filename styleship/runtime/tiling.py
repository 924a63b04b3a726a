"""Tiled stylization: large images in overlapping tiles, blended without seams.

How it works:
- The image is cut into tiles of `tile`×`tile` that overlap by at least
  `overlap` pixels: as few as can, spread evenly from border to border, so
  every tile has the same size and the tiles can be batched.
- Every tile uses the same style code, computed once.
- Tiles are blended with weights that ramp from 0 to 1 across each overlap
  (a raised cosine), and the weights are normalised. The weights are flat
  inside a tile, at the image border, and wherever no other tile
  contributes, so every pixel is a convex mix and there are no step edges.

Peak memory: the engine's activations are bounded by the tile size (times
the tile batch). The image buffers (input, accumulator, weights and output)
still grow with the image: about 28 bytes per pixel in float32.

This is the fallback for bundles without an exact split: models that
normalise with whole-image statistics see each tile's own statistics here,
so tiles differ from the untiled result even away from the seams
(docs/tiling.md reports how much). Bundles with a split use
runtime/exact_tiling.py instead, which shares the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 64


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: as few tiles as overlap at least `overlap`, spread evenly
    from flush with the start to flush with the end."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _ramp(n: int) -> np.ndarray:
    """n weights rising from near 0 to near 1 (raised cosine), never exactly 0."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return 0.5 - 0.5 * np.cos(np.pi * t)


def _axis_weights(size: int, first: bool, last: bool, overlap: int) -> np.ndarray:
    """1-D weights of one tile along one axis: ramps only on sides that overlap a neighbour."""
    w = np.ones(size, np.float32)
    n = min(overlap, size // 2)
    if n > 0:
        if not first:
            w[:n] = _ramp(n)
        if not last:
            w[-n:] = _ramp(n)[::-1]
    return w


def check_tiling(tile: int, overlap: int, multiple: int) -> None:
    from styleship.errors import InputError

    if tile < 4 * multiple or tile % multiple:
        raise InputError(f"tile must be a multiple of {multiple} and at least {4 * multiple}")
    if not 0 <= overlap <= tile // 2:
        raise InputError(f"overlap must be between 0 and half the tile ({tile // 2})")


def stylize_tiled(
    rgb: np.ndarray,
    run: Callable[[Sequence[np.ndarray]], list[np.ndarray]],
    tile: int,
    overlap: int,
    batch: int = 2,
) -> np.ndarray:
    """Stylize H×W×3 `rgb` tile by tile; `run` maps a list of tiles to stylized tiles."""
    h, w = rgb.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    ys, xs = starts(h, th, overlap), starts(w, tw, overlap)
    acc = np.zeros((h, w, 3), np.float32)
    weight = np.zeros((h, w, 1), np.float32)
    origins = [(y, x) for y in ys for x in xs]
    for i in range(0, len(origins), batch):
        chunk = origins[i : i + batch]
        outs = run([rgb[y : y + th, x : x + tw] for y, x in chunk])
        for (y, x), out in zip(chunk, outs):
            wy = _axis_weights(th, y == ys[0], y == ys[-1], overlap)
            wx = _axis_weights(tw, x == xs[0], x == xs[-1], overlap)
            win = (wy[:, None] * wx[None, :])[:, :, None]
            acc[y : y + th, x : x + tw] += out * win
            weight[y : y + th, x : x + tw] += win
    acc /= weight
    return acc
