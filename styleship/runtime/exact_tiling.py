"""Statistics-exact tiling: whole-image statistics streamed over tiles, then shared.

A bundle whose manifest has a `split` entry (export/split.py) carries its
stylizer cut at every whole-image reduction: one graph per level of
statistics, from a content tile (and the statistics of earlier levels) to the
tensors those statistics reduce, and a last graph from a tile and every
statistic to the image. Here:

1. The image is cut into tiles whose interiors partition it, with edges on
   multiples of the manifest's `multiple` so every down-sampled grid lines up.
   Each tile is run with a halo of `halo` pixels of real neighbours on every
   side that has one: the receptive field, measured at export, so a tile's
   interior is computed exactly as in the whole image.
2. Level by level, every tile's interior adds its features to exact running
   sums in float64: per-channel count, mean and squared deviations (merged
   with Chan et al.'s pairwise update, so no cancellation), or the sum of
   outer products for a Gram matrix. After the level the statistics are fixed
   and fed to the next one.
3. Each tile is stylized with the shared statistics and its interior written
   out. Interiors do not overlap, so there is nothing to blend.

Cost: every level re-runs the graph prefix from the content tile (nothing at
full resolution is kept between levels), so time grows with the number of
levels; memory stays that of one tile plus the image buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from styleship.runtime import image as im

Run = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class StatSpec:
    name: str  # graph input it feeds
    kind: str  # mean | var | gram
    level: int
    feature: str  # output of that level's graph it reduces
    scale: int  # image pixels per feature pixel
    shape: tuple  # fed shape; the first axis is the batch


@dataclass(frozen=True)
class SplitPlan:
    """The manifest's `split` entry, read once."""

    levels: tuple[str, ...]
    stylize: str
    stats: tuple[StatSpec, ...]
    halo: int
    multiple: int

    @classmethod
    def from_manifest(cls, manifest: dict) -> SplitPlan | None:
        """The plan of an exact split, or None (no split, or one the export did not clear)."""
        split = manifest.get("split")
        if not split or not split.get("exact"):
            return None
        stats = tuple(
            StatSpec(s["name"], s["kind"], s["level"], s["feature"], s["scale"], tuple(s["shape"]))
            for s in split["stats"]
        )
        return cls(
            tuple(split["levels"]), split["stylize"], stats, split["halo"], split["multiple"]
        )

    @property
    def graphs(self) -> tuple[str, ...]:
        return (*self.levels, self.stylize)


def interiors(height: int, width: int, tile: int, multiple: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of tiles that partition the image, edges on multiples of `multiple`."""
    tile = max(multiple, tile // multiple * multiple)

    def cuts(n: int) -> list[int]:
        count = max(1, round(n / tile))
        edges = [round(i * n / count / multiple) * multiple for i in range(count)]
        return [*edges, n]

    ys, xs = cuts(height), cuts(width)
    return [
        (ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(len(ys) - 1) for j in range(len(xs) - 1)
    ]


def with_halo(box: tuple[int, int, int, int], height: int, width: int, halo: int):
    """The region a tile runs on: its interior grown by `halo`, clipped to the image."""
    y0, y1, x0, x1 = box
    return max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo)


class _Moments:
    """Exact running per-channel count, mean and squared deviations (float64)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        """x: C×N."""
        n = x.shape[1]
        mean = x.mean(axis=1, dtype=np.float64)
        m2 = np.square(x - mean[:, None].astype(x.dtype), dtype=np.float64).sum(axis=1)
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total


class _Outer:
    """Running Σ f fᵀ over positions (float64), for a Gram matrix over the whole image."""

    def __init__(self) -> None:
        self.n, self.sum = 0, 0.0

    def add(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        self.sum = self.sum + x64 @ x64.T
        self.n += x.shape[1]


def _value(spec: StatSpec, acc) -> np.ndarray:
    if spec.kind == "mean":
        v = acc.mean
    elif spec.kind == "var":
        v = acc.m2 / acc.n
    else:
        v = acc.sum / acc.n
    return np.asarray(v, np.float32).reshape(1, *spec.shape[1:])


def _interior(feat: np.ndarray, box, region, scale: int) -> np.ndarray:
    """The tile interior of a 1×C×h×w feature map of `region`, as C×N."""
    y0, y1, x0, x1 = box
    ry0, _, rx0, _ = region
    crop = feat[
        0, :, (y0 - ry0) // scale : (y1 - ry0) // scale, (x0 - rx0) // scale : (x1 - rx0) // scale
    ]
    return crop.reshape(crop.shape[0], -1)


def statistics(plan: SplitPlan, run: Run, rgb: np.ndarray, values: dict, tile: int) -> dict:
    """Every statistic of the whole padded image `rgb` (H×W×3), streamed over tiles."""
    h, w = rgb.shape[:2]
    boxes = interiors(h, w, tile, plan.multiple)
    known: dict[str, np.ndarray] = {}
    for level, graph in enumerate(plan.levels):
        specs = [s for s in plan.stats if s.level == level]
        accs = {(s.feature, s.kind != "gram"): None for s in specs}
        accs = {k: (_Moments() if k[1] else _Outer()) for k in accs}
        for box in boxes:
            region = with_halo(box, h, w, plan.halo)
            ry0, ry1, rx0, rx1 = region
            outs = run(graph, {**values, **known, "content": im.to_nchw(rgb[ry0:ry1, rx0:rx1])})
            for (feature, _), acc in accs.items():
                scale = next(s.scale for s in specs if s.feature == feature)
                acc.add(_interior(outs[feature], box, region, scale))
        for s in specs:
            known[s.name] = _value(s, accs[(s.feature, s.kind != "gram")])
    return known


def stylize(
    plan: SplitPlan, run: Run, rgb: np.ndarray, values: dict, tile: int, image_output: str
) -> np.ndarray:
    """Stylize the padded H×W×3 `rgb` tile by tile with whole-image statistics.

    `values` holds the style code and strength by name/kind, batch 1; `run`
    runs one of the plan's graphs on a dict of values (by kind or name).
    """
    h, w = rgb.shape[:2]
    known = statistics(plan, run, rgb, values, tile)
    out = np.empty((h, w, 3), np.float32)
    for box in interiors(h, w, tile, plan.multiple):
        region = with_halo(box, h, w, plan.halo)
        ry0, ry1, rx0, rx1 = region
        res = run(plan.stylize, {**values, **known, "content": im.to_nchw(rgb[ry0:ry1, rx0:rx1])})
        y0, y1, x0, x1 = box
        tile_out = im.from_nchw(res[image_output])
        out[y0:y1, x0:x1] = tile_out[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
    return out
