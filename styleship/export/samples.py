"""Sample images for parity checks and calibration, as arrays (torch-free).

Export (PyTorch graphs) and import (ONNX graphs) check bundles on the same
images: the repository's sample photos and paintings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from styleship.errors import InputError
from styleship.runtime import image as im

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def default_parity_images() -> tuple[list[Path], list[Path]]:
    """The repository's sample photos and paintings (two of each)."""
    contents = sorted((ASSETS / "content").glob("*.jpg"))[:2]
    styles = sorted((ASSETS / "styles").glob("*.jpg"))[:2]
    if len(contents) < 2 or len(styles) < 2:
        raise InputError(
            "no sample images for the parity check: pass --parity-content/--parity-style"
        )
    return contents, styles


def calibration_images(contents, styles) -> tuple[list[Path], list[Path]]:
    """int8 calibration images: the parity images and every sample image in the repository."""
    more_contents = (ASSETS / "content").glob("*.jpg")
    more_styles = (ASSETS / "styles").glob("*.jpg")
    return sorted({*map(Path, contents), *more_contents}), sorted(
        {*map(Path, styles), *more_styles}
    )


def resized(path: Path, height: int, width: int) -> np.ndarray:
    """A sample image resized to height×width (INTER_AREA), as 3×H×W float32."""
    import cv2

    rgb = im.read_image(path).rgb
    return np.ascontiguousarray(
        cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    )


def square(path: Path, size: int) -> np.ndarray:
    """A sample image resized to size×size, as 3×H×W float32."""
    return resized(path, size, size)


def parity_feed(contents, styles, size: int) -> dict[str, np.ndarray]:
    """The parity images at size², by input kind (batch = number of images)."""
    return {
        "content": np.stack([square(p, size) for p in contents]),
        "style": np.stack([square(p, size) for p in styles]),
        "strength": np.resize(np.array([1.0, 0.6], dtype=np.float32), len(contents)),
    }


def style_coder(bundle) -> Callable[[np.ndarray], dict[str, np.ndarray]] | None:
    """The bundle's fp32 style encoder (ONNX Runtime CPU) as a function from style images
    (N×3×H×W) to its codes by output name; None for a bundle without one. Checks and
    calibration compute codes in fp32, as the runtime's style cache does."""
    import onnxruntime as ort

    spec = bundle.graphs.get("style_encoder")
    if spec is None:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(bundle.path / spec.files["fp32"]), options, providers=["CPUExecutionProvider"]
    )
    names, style_input = [t.name for t in spec.outputs], spec.inputs[0].name
    return lambda style: dict(zip(names, session.run(None, {style_input: style})))


def sample_feeds(bundle, graph: str, contents, styles, sizes=(256, 384)) -> list[dict]:
    """The parity images (parity_feed) as feeds for one staged graph, at each size, style
    codes from the bundle's own fp32 style encoder. Empty where an input cannot be made
    from images (a graph fed statistics, a bundle without a style encoder).

    For checking a graph rewrite on real pictures: an untrained model's norms can amplify
    float rounding 300-fold on the flat regions of photos, which uniform-noise probes miss.
    """
    spec = bundle.graph(graph)
    coder = style_coder(bundle) if graph != "style_encoder" else None
    feeds = []
    for size in sizes:
        values = parity_feed(contents, styles, size)
        if coder is not None:
            values.update(coder(values["style"]))
        if any(t.value_key not in values for t in spec.inputs):
            return []
        feeds.append({t.name: values[t.value_key] for t in spec.inputs})
    return feeds


def staged_feeds(writer, contents, styles) -> Callable[[str], list[dict]]:
    """sample_feeds for each graph of a bundle being written, each made once and on first
    use: the stage is flushed (every staged file hashed) once per step, not per graph.
    Without `contents`, no feeds."""
    import functools

    bundle = functools.cache(lambda: writer.bundle())

    @functools.cache
    def feeds(graph: str) -> list[dict]:
        return sample_feeds(bundle(), graph, contents, styles) if contents else []

    return feeds
