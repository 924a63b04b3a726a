"""`--style-bank DIR` for export and import: encode every painting in DIR once.

The codes are computed by the staged bundle itself, through the same
`Stylizer.style_code` path (fp32, ONNX Runtime, default style size) that a
style image takes at run time, so stylizing by name gives the result that
stylizing with the painting gives. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from styleship._hashing import sha256_file
from styleship.bundle.writer import BundleWriter
from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime.style_bank import write_bank


def add_style_bank(writer: BundleWriter, directory: Path, log: Callable[[str], None]) -> None:
    """Encode the images in `directory` (named by file stem) into the staged bundle's bank."""
    from styleship.runtime.stylizer import Stylizer

    if not Path(directory).is_dir():
        raise InputError(f"style bank: not a directory: {directory}")
    paths = im.find_images([str(directory)])
    if not paths:
        raise InputError(f"style bank: no images in {directory}")
    entries, codes = [], []
    bundle = writer.bundle()
    with Stylizer(bundle, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        if not st.bundle.has_style_input:
            raise InputError(
                f"{bundle.name}: a bundle without a style encoder cannot encode a bank"
            )
        for path in paths:
            log(f"encoding style {path.stem}")
            codes.append(st.style_code(path))
            entries.append(
                {
                    "name": path.stem,
                    "source": path.name,
                    "source_sha256": sha256_file(path),
                    "style_size": st.style_size,
                }
            )
    writer.record("style_bank", write_bank(writer.stage, entries, codes))
