"""numpy arrays in and out of the Python API, for callers who already hold pixels.

An OpenCV user has a BGR uint8 array, a PIL or imageio user an RGB one; both
pass it straight to `Stylizer.stylize(..., channels=...)` and get back an array
of the same layout, dtype and channel order. Height × width × 3 (or × 4 with
alpha, or height × width for gray); uint8, uint16, or float in [0, 1].
"""

from __future__ import annotations

import numpy as np

from styleship.errors import InputError
from styleship.runtime.image import Image

CHANNELS = ("RGB", "BGR")
_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def check_channels(channels: str) -> str:
    order = channels.upper()
    if order not in CHANNELS:
        raise InputError(f"channels must be one of {', '.join(CHANNELS)}, not {channels!r}")
    return order


def to_image(array: np.ndarray, channels: str = "RGB", label: str = "image") -> Image:
    """An `Image` (RGB float32 in [0, 1]) from an HWC/HW array in `channels` order."""
    order = check_channels(channels)
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{label} array must be height × width × 3 (or × 4, or gray height × width), "
            f"got shape {tuple(array.shape)}"
        )
    if a.dtype in _SCALE:
        x = a.astype(np.float32) / _SCALE[a.dtype]
        depth = 16 if a.dtype == np.uint16 else 8
    elif a.dtype.kind == "f":
        x = a.astype(np.float32)
        if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
            raise InputError(f"{label} float array must hold values in [0, 1]")
        depth = 8
    else:
        raise InputError(f"{label} array must be uint8, uint16 or float in [0, 1], not {a.dtype}")
    alpha = x[:, :, 3].copy() if x.shape[2] == 4 else None
    rgb = np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x[:, :, :3]
    if order == "BGR":
        rgb = rgb[:, :, ::-1]
    return Image(rgb=np.ascontiguousarray(rgb), alpha=alpha, bit_depth=depth)


def from_image(img: Image, like: np.ndarray, channels: str = "RGB") -> np.ndarray:
    """`img` as an array laid out like the caller's input (dtype, alpha, channel order)."""
    order = check_channels(channels)
    rgb = np.clip(img.rgb, 0.0, 1.0)
    if order == "BGR":
        rgb = rgb[:, :, ::-1]
    if img.alpha is not None:
        rgb = np.dstack([rgb, img.alpha])
    dtype = np.asarray(like).dtype
    if dtype in _SCALE:
        return np.ascontiguousarray(np.rint(rgb * _SCALE[dtype]).astype(dtype))
    return np.ascontiguousarray(rgb.astype(np.float32))
