"""Commands that prepare deployment: TensorRT engines, a Triton model repository."""

from __future__ import annotations

from pathlib import Path

import typer

from styleship.cli._common import JSON_OPT, _print, app, err


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated sizes, got {text!r}") from None


@app.command()
def build(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    precision: str = typer.Option("fp16", help="fp32 (TF32 off), tf32 or fp16."),
    shapes: str = typer.Option(
        "256,512,1024", help="Sides to optimise for: one profile each, any side up to it."
    ),
    max_batch: int = typer.Option(16, min=1, help="Largest batch the engines accept."),
    opt_batch: int = typer.Option(1, min=1, help="Batch TensorRT tunes for."),
    workspace: int = typer.Option(4096, min=64, help="Builder workspace limit in MiB."),
    level: int = typer.Option(3, min=0, max=5, help="Builder optimisation level (0-5)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if up to date."),
    device: int = typer.Option(0, min=0, help="CUDA device index."),
    as_json: bool = JSON_OPT,
) -> None:
    """Build TensorRT engines for this GPU into BUNDLE/engines/<sm>-trt<version>/.

    Needs TensorRT 10 or 11 and an NVIDIA GPU (pip install 'styleship[gpu]').
    With TensorRT 11, fp16 needs the bundle's fp16 graph (export --precision fp16).

    Example: styleship build build/stvae-small.stvae --precision fp16 --shapes 256,512,1024
    """
    from styleship.export.tensorrt import build_engines

    with err.status("building engines") as status:
        directory = build_engines(
            bundle,
            precision,
            _sizes(shapes),
            max_batch,
            opt_batch,
            workspace,
            level,
            force=force,
            device=device,
            log=lambda m: status.update(m),
        )
    _print({"engines": str(directory)}, as_json, f"engines in {directory}")


@app.command("export-triton")
def export_triton(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    repo: Path = typer.Option(..., "-o", "--out", help="Model repository directory."),
    platform: str = typer.Option("onnxruntime_onnx", help="onnxruntime_onnx or tensorrt_plan."),
    precision: str = typer.Option("fp32", help="Which graphs/engines to serve: fp32 or fp16."),
    engines: Path = typer.Option(None, help="tensorrt_plan: the engines directory to use."),
    max_batch: int = typer.Option(16, min=1, help="max_batch_size of each model."),
    max_queue_delay_us: int = typer.Option(2000, min=0, help="Dynamic batching queue delay."),
    instances: int = typer.Option(1, min=1, help="Model instances per device."),
    kind: str = typer.Option("KIND_GPU", help="KIND_GPU or KIND_CPU."),
    warmup: str = typer.Option("512", help="Sides to warm up at, e.g. 256,512."),
    force: bool = typer.Option(False, "--force", help="Replace existing models."),
    as_json: bool = JSON_OPT,
) -> None:
    """Write a Triton model repository: <name>_style, <name> (cached style), <name>_pipeline.

    Example: styleship export-triton assets/models/stvae-demo.stvae -o build/triton --kind KIND_CPU
    """
    from styleship.export.triton import export_triton as write_repo

    dirs = write_repo(
        bundle,
        repo,
        platform,
        max_batch,
        max_queue_delay_us,
        instances,
        kind,
        _sizes(warmup),
        engines,
        precision,
        force,
    )
    _print(
        {"models": [str(d) for d in dirs]},
        as_json,
        "wrote " + ", ".join(str(d) for d in dirs),
    )
