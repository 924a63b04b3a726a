"""`styleship demo`: the main job on the embedded default (CPU, ONNX Runtime).

It uses the bundle shipped in `assets/models/` when there is one; until
trained bundles ship, it creates a narrow ST-VAE with seeded random weights,
exports it (which needs the torch extra) and says plainly that the weights
are untrained.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime.sheet import contact_sheet

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_CONFIG = {"width": 0.25, "z_dim": 64}
DEMO_VGG = "random:0"


def _shipped_bundle() -> Path | None:
    bundles = sorted((ASSETS / "models").glob("*.stvae"))
    return bundles[0] if bundles else None


def _random_bundle(out_dir: Path, log: Callable[[str], None]) -> Path:
    from styleship.export.onnx import export_bundle
    from styleship.models.checkpoint import save_checkpoint
    from styleship.models.registry import get_family

    bundle = out_dir / "stvae-random.stvae"
    if (bundle / "manifest.json").is_file():
        return bundle
    spec = get_family("stvae")
    log("creating an untrained ST-VAE (seeded random weights)")
    model, weights = spec.create(spec.config_from_dict(DEMO_CONFIG), DEMO_VGG, seed=0)
    ckpt = save_checkpoint(out_dir / "stvae-random", spec.name, model, weights)
    return export_bundle(ckpt, bundle, log=log)


def run_demo(
    out_dir: Path,
    model: Path | None = None,
    backend: str = "ort-cpu",
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """Stylize every sample photo with every sample painting; returns what was written."""
    from styleship.runtime.stylizer import Stylizer

    contents = sorted((ASSETS / "content").glob("*.jpg"))
    styles = sorted((ASSETS / "styles").glob("*.jpg"))
    if not contents or not styles:
        raise InputError(f"no sample images under {ASSETS}")
    out_dir = Path(out_dir)
    (out_dir / "outputs").mkdir(parents=True, exist_ok=True)
    bundle = model or _shipped_bundle() or _random_bundle(out_dir, log)
    grid, outputs = [], []
    start = time.perf_counter()
    with Stylizer(bundle, backend=backend, cache_dir=out_dir / "style-cache") as st:
        for c in contents:
            row = []
            for s in styles:
                log(f"stylizing {c.name} with {s.name}")
                img = st.stylize(c, s, max_size=512)
                target = out_dir / "outputs" / f"{c.stem}__{s.stem}.jpg"
                im.write_image(target, img)
                row.append(img.rgb)
                outputs.append(str(target))
            grid.append(row)
        seconds = time.perf_counter() - start
        untrained = st.bundle.untrained
    sheet = contact_sheet(
        [im.read_image(c).rgb for c in contents], [im.read_image(s).rgb for s in styles], grid
    )
    sheet_path = im.write_image(out_dir / "contact_sheet.jpg", im.Image(sheet))
    return {
        "bundle": str(bundle),
        "backend": backend,
        "untrained": untrained,
        "outputs": outputs,
        "contact_sheet": str(sheet_path),
        "seconds": seconds,
    }
