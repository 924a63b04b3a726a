"""Folder datasets with OpenCV loading and augmentation, deterministic per step.

A batch is a pure function of (seed, step, stream): which files are drawn and
how they are cropped and flipped come from a generator seeded with those
numbers, so `--resume` continues on exactly the batches an uninterrupted run
would have seen, whatever the worker count.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from styleship.errors import InputError, StyleshipError
from styleship.runtime.image import read_image

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
log = logging.getLogger("styleship.train")


class FolderDataset:
    """Every image below `root` (recursive), decoded with OpenCV, cached when small."""

    def __init__(self, root: str | Path, cache_limit: int = 2000) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"not a directory: {self.root}")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not self.files:
            raise InputError(f"no images ({', '.join(EXTENSIONS)}) below {self.root}")
        self.skipped: set[Path] = set()
        self._cache: dict[Path, np.ndarray] = {}
        self._cache_limit = cache_limit
        self._cache_all = len(self.files) <= cache_limit

    def add_files(self, paths: list[Path]) -> None:
        """Draw from these files too (e.g. the teacher's minted styles), after the folder's own.

        Appended in their given order rather than sorted in: sorting absolute paths would make
        the batches depend on where the folder and the run directory happen to live.
        """
        known = set(self.files)
        self.files = self.files + [p for p in dict.fromkeys(paths) if p not in known]
        self._cache_all = len(self.files) <= self._cache_limit

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> np.ndarray | None:
        """RGB float32 HWC, or None for an unreadable file (counted, logged once)."""
        if path in self._cache:
            return self._cache[path]
        try:
            rgb = read_image(path).rgb
        except StyleshipError as exc:
            if path not in self.skipped:
                self.skipped.add(path)
                log.warning("skipping unreadable training image: %s", exc)
            return None
        if self._cache_all:
            self._cache[path] = rgb
        return rgb


def random_crop(
    rgb: np.ndarray, size: int, rng: np.random.Generator, scale=(0.5, 1.0)
) -> np.ndarray:
    """Random-resized crop (area fraction in `scale`) to size×size, plus a random flip."""
    h, w = rgb.shape[:2]
    side = min(h, w) * np.sqrt(rng.uniform(*scale))
    side = max(8, int(side))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(rgb[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


class BatchMaker:
    """Draws augmented batches from a dataset, decoding with a thread pool."""

    def __init__(
        self,
        dataset: FolderDataset,
        size: int,
        batch: int,
        seed: int,
        stream: int,
        workers: int = 2,
    ) -> None:
        self.dataset, self.size, self.batch = dataset, size, batch
        self.seed, self.stream = seed, stream
        self.pool = ThreadPoolExecutor(max(1, workers)) if workers > 1 else None

    def __call__(self, step: int) -> np.ndarray:
        """(batch, 3, size, size) float32 for training step `step`."""
        rng = np.random.default_rng([self.seed, self.stream, step])
        out: list[np.ndarray] = []
        for _ in range(50):
            need = self.batch - len(out)
            if need == 0:
                break
            picks = [self.dataset.files[i] for i in rng.integers(0, len(self.dataset), need)]
            loaded = list(
                self.pool.map(self.dataset.load, picks)
                if self.pool
                else map(self.dataset.load, picks)
            )
            for rgb in loaded:
                if rgb is not None and min(rgb.shape[:2]) >= 8:
                    out.append(random_crop(rgb, self.size, rng))
        else:
            raise InputError(f"too few readable images in {self.dataset.root} to fill a batch")
        return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32)

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()
