"""Images in and out, with OpenCV: decode, orientation, colour, resize, pad, encode.

Models take RGB float32 NCHW in [0, 1]. Everything a photo can carry that
models do not take is handled here: EXIF orientation, grayscale, alpha (kept
and re-attached), 16-bit depth, CMYK JPEGs (OpenCV converts them), and
sizes that are not multiples of 8 (reflection padding, cropped back).
"""

from __future__ import annotations

import glob
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from styleship import _atomic
from styleship.errors import InputError

# OpenCV's own logger prints "[ WARN:0@0.1] global grfmt_png.cpp ..." lines on stderr when
# it meets a damaged file, before styleship reports the same problem as its one-line error
# (as runtime/video.py silences FFmpeg). OPENCV_LOG_LEVEL, when set, still wins for debugging.
# The wheels' binding takes the level as a number: 0 is cv::utils::logging::LOG_LEVEL_SILENT.
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.setLogLevel(0)

DEFAULT_MAX_PIXELS = 40_000_000
MULTIPLE = 8
MIN_SIDE = 16  # the encoders downsample 8×; relu4_1 must stay at least 2×2 for reflection pads
WRITE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
ALPHA_EXTENSIONS = (".png", ".webp", ".tif", ".tiff")
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")  # chunks libpng cannot do without


@dataclass
class Image:
    """RGB float32 HWC in [0, 1], with its alpha (HW) when the file had one."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.rgb.shape[1], self.rgb.shape[0]


def read_bytes(src: str | os.PathLike) -> bytes:
    path = Path(src)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image file")
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    data = path.read_bytes()
    if not data:
        raise InputError(f"{path} is empty")
    return data


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF, BMP or WebP header, without decoding pixels."""
    if data[:8] == PNG_SIGNATURE and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            w = int.from_bytes(data[24:27], "little") + 1
            return w, int.from_bytes(data[27:30], "little") + 1
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) for each JPEG header segment, up to the first scan."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 2 if marker != 0xFF else 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no more headers
            return
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        yield marker, data[i + 4 : i + 2 + length]
        i += 2 + length


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    for marker, payload in _jpeg_segments(data):
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(payload) >= 5:
            h, w = struct.unpack(">HH", payload[1:5])
            return w, h
    return None


def _exif_block(data: bytes) -> bytes:
    """The EXIF block of a JPEG (APP1) or PNG (eXIf chunk), empty when there is none.

    Read here rather than through OpenCV's metadata API, which only OpenCV >= 4.12 has
    (and 4.12 needs NumPy 2, which the serving install cannot use).
    """
    if data[:2] == b"\xff\xd8":
        for marker, payload in _jpeg_segments(data):
            if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
                return payload[6:]
    elif data[:8] == PNG_SIGNATURE:
        i = 8
        while i + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[i : i + 8])
            if kind == b"eXIf":
                return data[i + 8 : i + 8 + length]
            if kind == b"IDAT":  # EXIF before the pixels is the only place we look
                break
            i += 12 + length
    return b""


def _exif_orientation(exif: bytes) -> int:
    """The EXIF Orientation tag (1..8), 1 when absent or unreadable."""
    if exif[:6] == b"Exif\x00\x00":
        exif = exif[6:]
    if len(exif) < 8 or exif[:2] not in (b"II", b"MM"):
        return 1
    end = "<" if exif[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(end + "I", exif[4:8])
        (count,) = struct.unpack(end + "H", exif[ifd : ifd + 2])
        for k in range(count):
            entry = exif[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, _typ, _n = struct.unpack(end + "HHI", entry[:8])
            if tag == 0x0112:
                value = struct.unpack(end + "H", entry[8:10])[0]
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation so the image comes out upright."""
    if orientation in (2, 4, 5, 7):
        img = cv2.flip(img, 1)
    rotations = {
        3: cv2.ROTATE_180,
        4: cv2.ROTATE_180,
        5: cv2.ROTATE_90_COUNTERCLOCKWISE,
        6: cv2.ROTATE_90_CLOCKWISE,
        7: cv2.ROTATE_90_CLOCKWISE,
        8: cv2.ROTATE_90_COUNTERCLOCKWISE,
    }
    if orientation in rotations:
        img = cv2.rotate(img, rotations[orientation])
    return img


def _check_complete(data: bytes, label: str) -> None:
    """Refuse truncated JPEG/PNG files: their decoders would return a half-grey image."""
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        raise InputError(f"{label} is a truncated JPEG (no end-of-image marker)")
    if data[:8] == PNG_SIGNATURE and b"IEND" not in data[-64:]:
        raise InputError(f"{label} is a truncated PNG (no IEND chunk)")


def _check_png(data: bytes, label: str) -> None:
    """Refuse a PNG whose header or critical chunks are damaged, before libpng reads it.

    libpng reports such files ("libpng error: Invalid IHDR data") by printing to stderr
    itself, which no OpenCV setting silences, and then fails anyway; checking the chunk
    structure here keeps the report to styleship's one line. Damage inside valid
    chunks (a corrupt deflate stream) is still only found by decoding.
    """
    if data[:8] != PNG_SIGNATURE:
        return
    i = 8
    while i + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        end = i + 12 + length
        if end > len(data):
            raise InputError(f"{label} is a truncated PNG (a chunk runs past the end)")
        if i == 8:
            if kind != b"IHDR" or length != 13:
                raise InputError(f"{label} is not a valid PNG (it does not start with IHDR)")
            w, h = struct.unpack(">II", data[i + 8 : i + 16])
            if not (0 < w < 2**31 and 0 < h < 2**31):
                raise InputError(f"{label} is not a valid PNG (its header says {w}×{h} pixels)")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if kind in PNG_CRITICAL and zlib.crc32(data[i + 4 : end - 4]) != crc:
            raise InputError(f"{label} is a damaged PNG (bad checksum in {kind.decode()})")
        if kind == b"IEND":
            return
        i = end


def decode(data: bytes, label: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode encoded image bytes; the pixel limit is checked on the header first."""
    if not data:
        raise InputError(f"{label} is empty")
    size = declared_size(data)
    if size and size[0] * size[1] > max_pixels:
        raise InputError(
            f"{label} is {size[0]}×{size[1]} ({size[0] * size[1] / 1e6:.1f} MP), over the "
            f"{max_pixels / 1e6:g} MP limit (raise it with --max-pixels)"
        )
    _check_complete(data, label)
    _check_png(data, label)
    buf = np.frombuffer(data, np.uint8)
    # IMREAD_UNCHANGED keeps alpha and 16-bit depth but ignores EXIF: orient here.
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(f"{label} is not a readable image (unknown format, or truncated)")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise InputError(f"{label} is over the {max_pixels / 1e6:g} MP limit")
    img = _orient(img, _exif_orientation(_exif_block(data)))
    if img.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif img.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    else:
        raise InputError(f"{label}: unsupported pixel type {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 3:
        # The colour swap on the integer pixels, then one float copy divided in place:
        # a 1 MP photo makes one 12 MB float array instead of two.
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)
        return Image(rgb=np.divide(rgb, scale, out=rgb), alpha=None, bit_depth=bit_depth)
    img = img.astype(np.float32) / scale
    alpha = None
    if img.ndim == 2:
        rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        rgb, alpha = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB), img[:, :, 3].copy()
    elif img.shape[2] == 2:  # gray + alpha
        rgb, alpha = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB), img[:, :, 1].copy()
    if min(rgb.shape[:2]) < 1:
        raise InputError(f"{label} has no pixels")
    return Image(rgb=np.ascontiguousarray(rgb), alpha=alpha, bit_depth=bit_depth)


def read_image(src: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Read an image from a path or from encoded bytes."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return decode(bytes(src), "image bytes", max_pixels)
    return decode(read_bytes(src), str(src), max_pixels)


def resize_max_side(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink so the longer side is at most `max_side` (never enlarges)."""
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def check_min_size(rgb: np.ndarray, label: str) -> None:
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{label} is {w}×{h}; styleship needs at least {MIN_SIDE} px per side")


def pad_to_multiple(rgb: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """Reflection-pad bottom/right so both sides are multiples of `multiple`."""
    h, w = rgb.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return rgb
    return cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)


def to_nchw(rgb: np.ndarray) -> np.ndarray:
    """HWC float32 -> 1×3×H×W float32 (contiguous)."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)


def from_nchw(batch: np.ndarray, index: int = 0) -> np.ndarray:
    """Image `index` of an N×C×H×W batch as H×W×C (contiguous).

    OpenCV's merge interleaves the planes in one pass: 0.5 ms at 1 MP against
    7.3 ms for numpy's strided copy of the transpose (2-core EPYC).
    """
    planes = batch[index]
    if planes.shape[0] == 1:  # merge would drop the channel axis
        return np.ascontiguousarray(planes.transpose(1, 2, 0))
    return cv2.merge([np.ascontiguousarray(plane) for plane in planes])


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float [0, 1] to uint8, rounded to nearest (what every 8-bit output uses)."""
    return (np.clip(rgb, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def preserve_color(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Keep the stylized luminance and the content's chroma (YCrCb luminance transfer)."""
    y = cv2.cvtColor(np.clip(stylized, 0, 1), cv2.COLOR_RGB2YCrCb)[:, :, :1]
    crcb = cv2.cvtColor(np.clip(content, 0, 1), cv2.COLOR_RGB2YCrCb)[:, :, 1:]
    return np.clip(cv2.cvtColor(np.concatenate([y, crcb], axis=2), cv2.COLOR_YCrCb2RGB), 0, 1)


def _quantise(x: np.ndarray, scale: float, dtype: type) -> np.ndarray:
    """Float [0, 1] to integers, rounded half up: clip, scale and shift in one temporary."""
    t = np.clip(x, 0, 1)
    t *= scale
    t += 0.5
    return t.astype(dtype)


def encode(img: Image, ext: str, quality: int = 95) -> bytes:
    """Encode to the format named by `ext`; alpha and 16 bits kept where the format can."""
    ext = ext.lower()
    if ext not in WRITE_EXTENSIONS:
        raise InputError(
            f"cannot write {ext or 'files without an extension'}; use one of "
            f"{', '.join(WRITE_EXTENSIONS)}"
        )
    depth16 = img.bit_depth == 16 and ext in SIXTEEN_BIT_EXTENSIONS
    scale, dtype = (65535.0, np.uint16) if depth16 else (255.0, np.uint8)
    # Quantise first, then swap channels and attach alpha on the small integer array:
    # one float temporary instead of four float passes (clip, cvtColor, dstack, scale).
    out = cv2.cvtColor(_quantise(img.rgb, scale, dtype), cv2.COLOR_RGB2BGR)
    if img.alpha is not None and ext in ALPHA_EXTENSIONS:
        out = np.dstack([out, _quantise(img.alpha, scale, dtype)])
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, out, params)
    if not ok:
        raise InputError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()


def write_image(path: str | os.PathLike, img: Image) -> Path:
    """Encode by extension and write atomically."""
    path = Path(path)
    return _atomic.write_bytes(path, encode(img, path.suffix))


READ_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def find_images(args: list[str]) -> list[Path]:
    """Expand paths, directories (their image files) and glob patterns, in order.

    Plain paths are kept even if missing or unreadable: each is then reported
    as a failure on its own, without stopping the others.
    """
    found: list[Path] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in READ_EXTENSIONS)
        elif not path.exists() and any(ch in arg for ch in "*?["):
            # glob.glob, not Path.glob: absolute patterns and "**" work as the shell's do.
            matches = glob.glob(str(path), recursive=True)
            found += sorted(Path(p) for p in matches if Path(p).is_file())
        else:
            found.append(path)
    if not found:
        raise InputError(f"no images found in {' '.join(args)}")
    return list(dict.fromkeys(found))
