"""The suite's models as bundles: shipped ones as they are, seeded full-width ones built and
exported once, pretrained ones imported once from the installed package."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from styleship import __version__
from styleship._hashing import sha256_json
from styleship.bench.config import Suite
from styleship.runtime.bundle import Bundle

Log = Callable[[str], None]
_PACKAGE = Path(__file__).resolve().parent.parent


def exporter_digest() -> str:
    """A digest of the code that writes bundles (styleship/export and styleship/models).

    Part of every cache key: a cached bundle written by older export code (say, before
    a change to how int8 graphs are quantised) would otherwise be measured as if new.
    """
    h = hashlib.sha256()
    for folder in ("export", "models"):
        for f in sorted((_PACKAGE / folder).glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


TORCH_BACKENDS = ("torch", "torch-compile")
TENSORRT = ("tensorrt", "tensorrt-graph")


def exports_needed(suite: Suite, model_id: str) -> dict[str, bool]:
    """What of an export the suite's cases of this model read, beyond the checkpoint.

    The torch backends run the checkpoint itself; ONNX graphs (and their parity check)
    are for the other engines, fp16 and int8 twins for those engines at that precision,
    and the split graphs and memory record for tiled rows. A full-width model that only
    torch rows measure is then ready in seconds instead of minutes.
    """
    cases = [c for c in suite.cases() if c.model == model_id]
    engines = [c for c in cases if c.backend not in TORCH_BACKENDS]
    tiles = any(model_id in b.models and b.tiles for b in suite.runs)
    return {
        "onnx": bool(engines) or tiles,
        # GPU suites: fp16 TensorRT engines and ORT's fp16 are built from the fp16 graphs.
        "fp16": suite.device == "cuda" and any(c.precision == "fp16" for c in engines),
        "int8": any(c.precision == "int8" for c in engines),
        "tiling": tiles,
    }


def prepare_model(suite: Suite, model_id: str, work_dir: Path, log: Log) -> Bundle:
    """A shipped bundle as is, or a family+config built with seeded weights and exported
    once, as far as the suite's cases need (`exports_needed`).

    Exported bundles are cached under `work_dir` by a hash of what defines them.
    """
    spec = suite.models[model_id]
    if spec.bundle is not None:
        return Bundle.load(spec.bundle)
    if spec.imported is not None:
        return _imported(spec.imported, work_dir, log)
    from styleship.export.onnx import export_bundle
    from styleship.models.checkpoint import save_checkpoint
    from styleship.models.registry import get_family

    family = get_family(spec.family)
    needs = exports_needed(suite, model_id)
    key = sha256_json(
        {"family": spec.family, "config": spec.config, "vgg": spec.vgg, "seed": suite.seed}
        | {"styleship": __version__, "needs": needs, "int8_min_psnr": 30.0}
        | {"exporter": exporter_digest()}
    )[:16]
    path = work_dir / f"{model_id}-{key}.{family.name}"
    if (path / "manifest.json").is_file():
        return Bundle.load(path)
    what = "exporting it" if needs["onnx"] else "keeping its checkpoint (torch rows only)"
    log(f"building {model_id} (seeded random weights) and {what}")
    model, weights = family.create(family.config_from_dict(spec.config), spec.vgg, suite.seed)
    ckpt = save_checkpoint(work_dir / f"{model_id}-{key}", family.name, model, weights)
    return Bundle.load(
        export_bundle(
            ckpt,
            path,
            force=True,
            fp16=needs["fp16"],
            int8=needs["int8"],
            onnx_graphs=needs["onnx"],
            tiling=needs["tiling"],
        )
    )


def build_suite_engines(
    suite: Suite, model_id: str, precision: str, bundle: Bundle, log: Log
) -> None:
    """TensorRT engines for every TensorRT case of this model and precision in the suite.

    One profile per size and timed batch (TensorRT tunes each profile at its opt shape,
    and a case at batch 16 should not run tactics tuned for batch 1), over all blocks at
    once: engines are named by graph and precision, so a second block building its own
    profiles would overwrite the first's. The style encoder is built apart, for what the
    Stylizer feeds it (one style at STYLE_SIZE), and only for end-to-end rows.
    """
    from styleship.bench.images import STYLE_SIZE
    from styleship.export.tensorrt import build_engines

    mine = [
        c
        for c in suite.cases()
        if c.backend in TENSORRT and (c.model, c.precision) == (model_id, precision)
    ]
    graphs = {"stylizer" if c.style == "cached" else "fused" for c in mine}
    batches = tuple(sorted({c.batch for c in mine}))
    build_engines(
        bundle.path,
        precision,
        sizes=tuple(sorted({c.size for c in mine})),
        max_batch=max(batches),
        opt_batch=batches,
        graphs=tuple(g for g in sorted(graphs) if g in bundle.graphs),
        log=log,
    )
    if bundle.has_style_input and any(
        suite.block_of(c).end_to_end and c.style == "cached" for c in mine
    ):
        build_engines(
            bundle.path,
            precision,
            sizes=(STYLE_SIZE,),
            max_batch=1,
            graphs=("style_encoder",),
            log=log,
        )


def _imported(name: str, work_dir: Path, log: Log) -> Bundle:
    """A pretrained network from the installed package, imported once per package version
    and exporter code."""
    from styleship.export import magenta

    path = work_dir / f"{name}-{magenta.VERSION}-{exporter_digest()}.{name}"
    if not (path / "manifest.json").is_file():
        log(f"importing {name} from the installed {magenta.DIST}")
        importer = magenta.import_magenta if name == "magenta" else magenta.import_multistyle26
        importer(path, force=True)
    return Bundle.load(path)
