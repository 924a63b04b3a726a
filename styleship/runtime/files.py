"""A folder of photos through one Stylizer: one result per input, in order, bad files skipped.

The largest photo runs first (by the pixel count in its header). Engines
keep their buffers between runs and grow them when a larger input arrives:
OpenVINO's dynamic-shape model takes about 95 ms more on a run that must
grow them (Magenta int8, 1 MP, 2-core EPYC). The whole-process benchmark's
seven 1 MP photos paid that three times in name order; largest first pays
it once.
Results still come back in the order given.

Reading and writing stay in line with the engine's runs: decoding the next
photo and encoding the last one on a helper thread was measured (seven 1 MP
PNGs on 2 cores, Magenta on OpenVINO int8) at 2.73 s against 2.75 s, with
70 MiB more at peak, because the engine already keeps both cores busy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from styleship.errors import InputError, StyleshipError
from styleship.runtime import image as im
from styleship.runtime.memory import padded_pixels

HEADER_BYTES = 1 << 16  # JPEG's frame header can follow EXIF data and a thumbnail


@dataclass
class FileResult:
    """One content file's outcome in a batch run."""

    input: Path
    output: Path | None
    error: str | None = None
    tiling: dict | None = None  # Stylizer.last_tiling for this file


def _target(content: Path, out_dir: Path, suffix: str, ext: str | None) -> Path:
    own = content.suffix.lower()
    return (
        out_dir / f"{content.stem}{suffix}{ext or (own if own in im.WRITE_EXTENSIONS else '.png')}"
    )


def _pixels(path: Path) -> int:
    """Pixels the engine will see (the header's width × height, padded as runs pad them);
    0 where the header cannot be read: the file runs last, and its own error, if any,
    comes from the real read."""
    try:
        with open(path, "rb") as f:
            size = im.declared_size(f.read(HEADER_BYTES))
    except OSError:
        return 0
    return padded_pixels(*size) if size else 0


def stylize_files(
    stylizer,
    contents: Sequence[Path],
    out_dir: Path,
    suffix: str = "",
    ext: str | None = None,
    on_done: Callable[[FileResult], None] | None = None,
    **options,
) -> list[FileResult]:
    """Stylize many files into `out_dir`; a bad file is recorded and skipped."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"output directory does not exist: {out_dir}")
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"output directory is not writable: {out_dir}")
    contents = [Path(c) for c in contents]
    inputs = {c.resolve() for c in contents}
    results: list[FileResult | None] = [None] * len(contents)
    for index in sorted(range(len(contents)), key=lambda i: -_pixels(contents[i])):
        content = contents[index]
        target = _target(content, out_dir, suffix, ext)
        try:
            if target.resolve() in inputs:
                raise InputError(f"output {target} would overwrite an input")
            im.write_image(target, stylizer.stylize(content, **options))
            result = FileResult(content, target, tiling=stylizer.last_tiling)
        except StyleshipError as exc:
            result = FileResult(content, None, str(exc))
        results[index] = result
        if on_done:
            on_done(result)
    return results
