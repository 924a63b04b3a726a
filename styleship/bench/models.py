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


def prepare_model(suite: Suite, model_id: str, work_dir: Path, log: Log) -> Bundle:
    """A shipped bundle as is, or a family+config built with seeded weights and exported once.

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
    # GPU suites also get fp16 graphs: fp16 TensorRT engines and ORT's fp16 are built from them.
    fp16 = suite.device == "cuda"
    precisions = ["fp32", "fp16", "int8"] if fp16 else ["fp32", "int8"]
    key = sha256_json(
        {"family": spec.family, "config": spec.config, "vgg": spec.vgg, "seed": suite.seed}
        | {"styleship": __version__, "precisions": precisions, "int8_min_psnr": 30.0}
        | {"exporter": exporter_digest()}
    )[:16]
    path = work_dir / f"{model_id}-{key}.{family.name}"
    if (path / "manifest.json").is_file():
        return Bundle.load(path)
    log(f"building {model_id} (seeded random weights) and exporting it")
    model, weights = family.create(family.config_from_dict(spec.config), spec.vgg, suite.seed)
    ckpt = save_checkpoint(work_dir / f"{model_id}-{key}", family.name, model, weights)
    return Bundle.load(export_bundle(ckpt, path, force=True, fp16=fp16, int8=True))


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
