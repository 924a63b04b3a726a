"""The `styleship` command line: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from styleship.errors import InputError, StyleshipError

app = typer.Typer(
    help="Export, run and benchmark feed-forward style-transfer models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JSON_OPT = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def _print(data: dict, as_json: bool, table: Table | str | None = None) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    elif table is not None:
        out.print(table)


def _kv_table(title: str, rows: dict) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(str(key), str(value))
    return table


@app.command()
def doctor(as_json: bool = JSON_OPT) -> None:
    """Show versions, usable backends, GPUs and conflicting packages.

    Example: styleship doctor --json
    """
    from styleship.doctor import diagnose

    report = diagnose()
    rows = {
        "styleship": report["styleship"],
        "python": report["python"],
        **{f"backend {k}": v for k, v in report["backends"].items()},
        "gpus": ", ".join(report["gpus"]) or "none",
        "tensorrt": report["tensorrt"],
        **{k: v or "-" for k, v in report["packages"].items()},
    }
    _print(report, as_json, _kv_table("styleship doctor", rows))
    for problem in report["problems"]:
        err.print(f"problem: {problem}")
    if report["problems"]:
        raise typer.Exit(1)


def _settings(items: list[str]) -> dict:
    """`key=value` pairs; values parse as JSON (numbers, booleans) or stay strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


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
    preset: str = typer.Option("demo", help="demo (CPU, minutes) or paper (the papers' settings)."),
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
    as_json: bool = JSON_OPT,
) -> None:
    """Train a model; checkpoints, samples and a log go to the run directory.

    Example: styleship train stvae --content assets/content --style assets/styles
    --vgg random:0 --preset demo -o build/train/stvae-demo
    """
    from styleship.train.trainer import Trainer

    overrides = {
        k: v
        for k, v in {"steps": steps, "size": size, "batch": batch, "width": width, "lr": lr}.items()
        if v is not None
    }
    trainer = Trainer(
        family, content, style, out_dir, vgg, preset, overrides, seed, workers, device, resume, init
    )
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[terms]}"),
        console=err,
        disable=as_json,
    )
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
    family: str = typer.Argument(..., help="Only stvae has official checkpoints."),
    encoder: Path = typer.Option(..., help="vgg_r41.pth"),
    decoder: Path = typer.Option(..., help="dec_r41.pth"),
    matrix: Path = typer.Option(..., help="matrix_r41_new.pth"),
    out_path: Path = typer.Option(..., "-o", "--out", help="Checkpoint name to write."),
    as_json: bool = JSON_OPT,
) -> None:
    """Convert the officially released ST-VAE checkpoints (loaded with weights_only=True).

    Example: styleship import stvae --encoder vgg_r41.pth --decoder dec_r41.pth
    --matrix matrix_r41_new.pth -o stvae-official
    """
    if family != "stvae":
        raise InputError(f"no official checkpoints to import for {family!r} (only stvae)")
    from styleship.models.checkpoint import save_checkpoint
    from styleship.models.stvae_official import import_official

    model, weights = import_official(encoder, decoder, matrix)
    path = save_checkpoint(out_path, "stvae", model, weights)
    _print({"checkpoint": str(path), "config": model.config.to_dict()}, as_json, f"wrote {path}")


@app.command()
def export(
    checkpoint: Path = typer.Argument(
        ..., help="Checkpoint (NAME, NAME.json or NAME.safetensors)."
    ),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Bundle directory to create."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
    as_json: bool = JSON_OPT,
) -> None:
    """Export a checkpoint to an ONNX model bundle, parity-checked against PyTorch.

    Example: styleship export build/stvae-small -o build/stvae-small.stvae
    """
    from styleship.export.onnx import export_bundle

    with err.status("exporting") as status:
        path = export_bundle(checkpoint, out_dir, force=force, log=lambda m: status.update(m))
    manifest = json.loads((path / "manifest.json").read_text())
    worst = max(r.get("max_abs", 0.0) for r in manifest["parity"]["results"])
    _print(
        {"bundle": str(path), "parity": manifest["parity"]},
        as_json,
        f"wrote {path} (parity vs PyTorch: max abs error {worst:.2e})",
    )


@app.command()
def inspect(
    bundle: Path = typer.Argument(..., help="Bundle directory."), as_json: bool = JSON_OPT
) -> None:
    """Summarise a bundle's manifest: family, graphs, weights, parity.

    Example: styleship inspect build/stvae-small.stvae
    """
    from styleship.runtime.bundle import Bundle

    b = Bundle.load(bundle)
    m = b.manifest
    parity = m.get("parity", {})
    rows = {
        "name": b.name,
        "family": b.family,
        "config": m["config"],
        "opset": m["opset"],
        "graphs": ", ".join(f"{g} ({', '.join(i.files)})" for g, i in b.graphs.items()),
        "model": ", ".join(f"{k}={v}" for k, v in m.get("model_info", {}).items()),
        "weights": "UNTRAINED (random/demo)"
        if b.untrained
        else m["weights"].get("note") or "trained",
        "parity": f"{'passed' if parity.get('passed') else 'FAILED'} on {parity.get('backend')}",
        "created": m.get("created"),
        "versions": m.get("versions"),
    }
    _print({"path": str(b.path), "hash": b.hash, **m}, as_json, _kv_table(str(b.path), rows))


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


@app.command()
def stylize(
    contents: list[str] = typer.Argument(..., help="Content images, directories or globs."),
    model: Path = typer.Option(..., "--model", "-m", help="Bundle directory."),
    style: list[Path] = typer.Option(
        ..., "--style", "-s", help="Style image; repeat to mix styles."
    ),
    weights: str = typer.Option(None, help="Mixing weights, e.g. 0.7,0.3 (default: equal)."),
    alpha: float = typer.Option(1.0, min=0.0, max=1.0, help="Style strength: 0 keeps the content."),
    preserve_color: bool = typer.Option(
        False, "--preserve-color", help="Keep the content's colours."
    ),
    max_size: int = typer.Option(None, help="Shrink contents so the long side is at most this."),
    style_size: int = typer.Option(512, help="Long side the style image is encoded at."),
    backend: str = typer.Option(None, help="ort-cpu, ort-cuda, ort-trt (default: best available)."),
    out_dir: Path = typer.Option(Path("."), "--out", "-o", help="Output directory."),
    suffix: str = typer.Option("_stylized", help="Appended to each output's file name."),
    max_pixels: int = typer.Option(40_000_000, help="Refuse images with more pixels than this."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stylize images with a bundle; bad files are reported and skipped.

    Example: styleship stylize photos/ -m starry.stvae -s starry.jpg -s scream.jpg
    --weights 0.7,0.3 --alpha 0.8 -o out/
    """
    from styleship.runtime.image import find_images
    from styleship.runtime.stylizer import Stylizer

    files = find_images(contents)
    mix = _weights(weights)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=as_json,
    )
    with Stylizer(model, backend=backend, style_size=style_size, max_pixels=max_pixels) as st, bar:
        task = bar.add_task("stylizing", total=len(files))
        results = st.stylize_files(
            files,
            out_dir,
            suffix=suffix,
            on_done=lambda r: bar.advance(task),
            styles=style,
            weights=mix,
            alpha=alpha,
            preserve_color=preserve_color,
            max_size=max_size,
        )
    failed = [r for r in results if r.error]
    data = {
        "backend": st.backend_name,
        "results": [
            {"input": str(r.input), "output": str(r.output) if r.output else None, "error": r.error}
            for r in results
        ],
    }
    if as_json:
        _print(data, True)
    else:
        for r in results:
            (err if r.error else out).print(
                f"{'error' if r.error else 'wrote'}: {r.error or r.output}", markup=False
            )
    if failed:
        err.print(f"{len(failed)} of {len(results)} images failed")
        raise typer.Exit(1)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("build/demo"), "--out", "-o", help="Where to write results."),
    model: Path = typer.Option(
        None, "--model", "-m", help="Bundle to use (default: the shipped one)."
    ),
    backend: str = typer.Option("ort-cpu", help="Backend to run on."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stylize the sample photos with the sample paintings and write a contact sheet.

    Example: styleship demo --out build/demo
    """
    from styleship.demo import run_demo

    with err.status("preparing the demo") as status:
        result = run_demo(out_dir, model, backend, log=lambda m: status.update(m))
    if as_json:
        _print(result, True)
        return
    for run in result["bundles"]:
        out.print(f"[bold]{run['bundle']}[/] ({run['family']}) on {result['backend']}")
        if run["untrained"]:
            out.print(
                "  [yellow]note:[/] UNTRAINED (seeded random) weights: the pipeline runs "
                "end to end, but the images are not real stylizations."
            )
        elif run["note"]:
            out.print(f"  [yellow]note:[/] {run['note']}")
        out.print(
            f"  {len(run['outputs'])} images, {run['ms_per_image']:.0f} ms per image "
            f"(decode, stylize, encode); contact sheet: {run['contact_sheet']}"
        )


def main() -> None:
    """Entry point: library errors become `error: <one line>` and exit 1; bad usage exits 2."""
    try:
        app()  # typer reports bad usage itself, with exit status 2
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except StyleshipError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as exc:
        err.print(
            f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
