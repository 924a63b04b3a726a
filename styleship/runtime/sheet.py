"""Contact sheets: a grid of stylized images with the contents down the side and
the styles across the top, so a run can be judged at a glance."""

from __future__ import annotations

import cv2
import numpy as np


def _thumb(rgb: np.ndarray, cell: int) -> np.ndarray:
    """Fit inside cell×cell, centred on white."""
    h, w = rgb.shape[:2]
    s = cell / max(h, w)
    small = cv2.resize(
        rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
    )
    canvas = np.ones((cell, cell, 3), np.float32)
    y, x = (cell - small.shape[0]) // 2, (cell - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def contact_sheet(
    contents: list[np.ndarray],
    styles: list[np.ndarray],
    grid: list[list[np.ndarray]],
    cell: int = 192,
    gap: int = 4,
) -> np.ndarray:
    """RGB float image: row 0 = styles, column 0 = contents, grid[i][j] = content i × style j."""
    rows, cols = len(contents) + 1, len(styles) + 1
    sheet = np.ones((rows * (cell + gap) + gap, cols * (cell + gap) + gap, 3), np.float32)

    def put(r: int, c: int, rgb: np.ndarray) -> None:
        y, x = gap + r * (cell + gap), gap + c * (cell + gap)
        sheet[y : y + cell, x : x + cell] = _thumb(rgb, cell)

    for j, s in enumerate(styles):
        put(0, j + 1, s)
    for i, c in enumerate(contents):
        put(i + 1, 0, c)
        for j, g in enumerate(grid[i]):
            put(i + 1, j + 1, g)
    return sheet
