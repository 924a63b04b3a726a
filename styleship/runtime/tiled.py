"""How `Stylizer` tiles: the choice (untiled, exact, blended) and the exact path.

Kept apart from stylizer.py so that module stays about one thing. The choice:
`tile=0` never tiles; a number tiles at that side; `"auto"` tiles only when
the untiled run would not fit the memory budget (runtime/memory.py). Tiles are
exact (shared whole-image statistics, runtime/exact_tiling.py) when the bundle
carries a split that its export cleared and this backend can run it; otherwise
they are blended with their own statistics (runtime/tiling.py) and the record
says why.
"""

from __future__ import annotations

import numpy as np

from styleship.errors import InputError, StyleshipError
from styleship.runtime import exact_tiling
from styleship.runtime import image as im


class TilingMixin:
    """Stylizer methods for tiling; the Stylizer provides bundle, engines and jobs."""

    def _exact_engines(self) -> dict | None:
        """The split graphs' engines, opened on first use; None when the bundle has no exact
        split or this backend/precision cannot run it (then tiles use their own statistics)."""
        if self._split is None or self._split_error:
            return None
        if self._split_engines is None:
            engines: dict = {}
            try:
                for graph in self._split.graphs:
                    engines[graph] = self._open(graph, memory_arena=False)
            except StyleshipError as exc:
                for engine in engines.values():
                    engine.close()
                self._split_error = str(exc)
                return None
            self._split_engines = engines
        return self._split_engines

    def _stylize_exact(self, job, side: int) -> im.Image:
        """Tiles that share whole-image statistics: the same image as untiled."""
        job = self._checked(job)
        engines = self._exact_engines()
        values = {name: job.code[name] for name in self.bundle.style_code}
        values["strength"] = np.array([job.alpha], np.float32)

        def run(graph: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return engines[graph].run(self._feed(engines[graph], feed))

        padded = im.pad_to_multiple(job.image.rgb)
        out = exact_tiling.stylize(self._split, run, padded, values, side, self._image_output)
        return self._finish(job, out, False, self.bundle.strength_rule == "blend")

    def _tiling(self, img: im.Image, tile: int | str | None, max_memory: int | None) -> dict:
        """Whether and how to tile `img`, and why (what `last_tiling` reports)."""
        if tile is None or tile == 0:
            return {"mode": "untiled", "tile": None, "reason": "tiling off"}
        if self.bundle.fixed_size:
            return {"mode": "untiled", "tile": None, "reason": "the graph takes one fixed size"}
        if tile != "auto":
            if isinstance(tile, str):
                raise InputError(f"tile must be a number of pixels, 0 or 'auto', not {tile!r}")
            side = int(tile)
            if side < 4 * im.MULTIPLE or side % im.MULTIPLE:
                raise InputError(
                    f"tile must be a multiple of {im.MULTIPLE} and at least {4 * im.MULTIPLE}"
                )
            return {**self._tiled(side), "reason": f"tile {side} asked for"}
        from styleship.runtime import memory

        h, w = img.rgb.shape[:2]
        choice = memory.auto_tile(
            h,
            w,
            max_memory,
            lambda: memory.engine_bytes_per_pixel(self.bundle, self.backend_name, self.precision),
            self._split.halo if self._split is not None else 0,
        )
        if choice["tile"] is None:
            return {"mode": "untiled", **choice}
        return {**choice, **self._tiled(choice["tile"])}

    def _tiled(self, side: int) -> dict:
        """Tiles of `side`: exact when the split runs here, else blended (and why)."""
        if self._exact_engines() is not None:
            return {"mode": "exact", "tile": side, "halo": self._split.halo}
        split = self.bundle.record("split")
        why = self._split_error or (split or {}).get(
            "reason",
            "the bundle has no split graphs (re-export it, or python -m "
            "styleship.export.split BUNDLE)",
        )
        return {"mode": "blend", "tile": side, "inexact": why}
