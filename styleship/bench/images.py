"""The suite's content and style photos at each measured size, and the feeds built from them.

Shared by the parent (quality scores) and the worker processes (what they time),
so both see exactly the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from styleship.bench.config import BenchCase, Suite
from styleship.runtime import image as im
from styleship.runtime.bundle import TensorSpec

STYLE_SIZE = 512  # the long side style codes are computed at (as the Stylizer does)


def square(rgb: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


class SuiteImages:
    def __init__(self, suite: Suite) -> None:
        self.content = im.read_image(suite.content).rgb
        self.style = im.read_image(suite.style).rgb
        self.style_code_input = im.resize_max_side(self.style, STYLE_SIZE)

    def content_at(self, size: int) -> np.ndarray:
        return square(self.content, size)

    def style_at(self, size: int) -> np.ndarray:
        return square(self.style, size)

    def content_jpeg(self, size: int) -> bytes:
        return im.encode(im.Image(self.content_at(size)), ".jpg")

    def feeds(
        self, case: BenchCase, inputs: dict[str, TensorSpec], code: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The graph's inputs for one case: batch copies of the photos (and the cached code)."""
        values = {
            "content": np.repeat(im.to_nchw(self.content_at(case.size)), case.batch, axis=0),
            "style": np.repeat(im.to_nchw(self.style_at(case.size)), case.batch, axis=0),
            "strength": np.ones(case.batch, dtype=np.float32),
        }
        if case.style == "cached":
            for name, arr in code.items():
                values[name] = np.repeat(arr, case.batch, axis=0)
        return {name: values[spec.value_key] for name, spec in inputs.items()}
