"""Style codes cached in memory (LRU) and on disk.

A style code depends only on the style image, the bundle and the style size,
so it is computed once: keys are the image's sha256 and the style size, inside
a namespace per bundle hash. Disk entries are `.npz` files read with
`allow_pickle=False`; an unreadable entry is recomputed, never trusted.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from styleship import _atomic
from styleship.errors import StyleshipError


def default_cache_dir() -> Path:
    if "STYLESHIP_CACHE" in os.environ:
        return Path(os.environ["STYLESHIP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "styleship" / "styles"


class StyleCache:
    def __init__(self, namespace: str, directory: Path | None, capacity: int = 128) -> None:
        self.directory = Path(directory) / namespace[:16] if directory else None
        self.capacity = capacity
        self._memory: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self.hits = self.misses = 0
        self._lock = threading.Lock()  # the server shares one cache between model instances

    def get(self, key: str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                self.hits += 1
                return self._memory[key]
        code = self._read(key, names)
        if code is None:
            self.misses += 1
            return None
        self.hits += 1
        self._remember(key, code)
        return code

    def put(self, key: str, code: dict[str, np.ndarray]) -> None:
        self._remember(key, code)
        if self.directory is None:
            return
        buf = io.BytesIO()
        np.savez(buf, **code)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic.write_bytes(self.directory / f"{key}.npz", buf.getvalue())
        except (OSError, StyleshipError):
            pass  # a read-only or full cache disk costs recomputation, not a failure

    def _remember(self, key: str, code: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._memory[key] = code
            self._memory.move_to_end(key)
            while len(self._memory) > self.capacity:
                self._memory.popitem(last=False)

    def _read(self, key: str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                if sorted(data.files) != sorted(names):
                    return None
                return {name: data[name] for name in names}
        except (OSError, ValueError, EOFError):
            return None
