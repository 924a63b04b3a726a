"""`styleship batch`: a dataset through a pool of Ray actors, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from styleship.cli._common import JSON_OPT, _print, app, engine_line, err, note, out, progress
from styleship.errors import InputError


@app.command()
def batch(
    inputs: list[str] = typer.Argument(
        ..., help="Directories, globs, image files, or list files (.txt: one path per line)."
    ),
    model: Path = typer.Option(..., "--model", "-m", help="Bundle directory."),
    style: str = typer.Option(
        None, "--style", "-s", help="Style image file, or a style name from the bundle's bank."
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (outputs + results.csv)."),
    ray_address: str = typer.Option(
        None, "--ray", help="Join this Ray cluster (e.g. ray://head:10001 or auto); default: local."
    ),
    actors: int = typer.Option(None, min=1, help="Actors (default: GPUs, or CPUs / --threads)."),
    threads: int = typer.Option(None, min=1, help="Cores per CPU actor (default: 2)."),
    batch_size: int = typer.Option(8, min=1, help="Images per actor call (same sizes: one run)."),
    alpha: float = typer.Option(1.0, min=0.0, max=1.0, help="Style strength."),
    preserve_color: bool = typer.Option(False, "--preserve-color"),
    max_size: int = typer.Option(None, min=16, help="Shrink so the long side is at most this."),
    fmt: str = typer.Option("keep", "--format", help="png, jpg, webp, or keep each input's."),
    suffix: str = typer.Option("_stylized", help="Appended to each output's file name."),
    backend: str = typer.Option(
        "auto",
        help="Engine on every actor; auto: the fastest cleared here (measured once, as for "
        "stylize).",
    ),
    precision: str = typer.Option("auto", help="auto, or fp32, bf16, int8, fp16."),
    max_pixels: int = typer.Option(40_000_000, min=256, help="Larger images are error rows."),
    force: bool = typer.Option(False, "--force", help="Redo everything, even finished outputs."),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Retry inputs that failed before (else skipped)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Stylize many images on Ray: a pool of actors, each holding one Stylizer.

    Writes the outputs (mirroring the input folders) and results.csv (input,
    output, size, status, error, time) into -o. A rerun skips inputs whose
    output still matches the table; unreadable files are error rows. Without
    --ray a local Ray is started; needs the ray extra (pip install 'styleship[ray]').

    Example: styleship batch photos/ -m build/magenta.magenta -s starry_night -o out/

    Example: styleship batch files.txt -m starry.stvae -s starry.jpg -o /shared/out --ray auto
    """
    from styleship.batch.job import BatchOptions, run_batch
    from styleship.runtime import image as im

    ext = None if fmt == "keep" else "." + fmt.lower().lstrip(".")
    if ext is not None and ext not in im.WRITE_EXTENSIONS:
        raise InputError(f"--format takes keep or one of {', '.join(im.WRITE_EXTENSIONS)}")
    options = BatchOptions(
        alpha=alpha,
        preserve_color=preserve_color,
        max_size=max_size,
        suffix=suffix,
        fmt=ext,
        backend=None if backend == "auto" else backend,
        precision=None if precision == "auto" else precision,
        max_pixels=max_pixels,
        runner={
            "address": ray_address,
            "actors": actors,
            "threads": threads,
            "batch_size": batch_size,
        },
    )
    bar = progress(as_json)
    task = None

    def planned(total: int, todo: int) -> None:
        nonlocal task
        if todo < total and not as_json:
            err.print(f"{total - todo} of {total} already done (results.csv); {todo} to go")
        task = bar.add_task("stylizing", total=todo)

    def row_done(row, skipped: bool) -> None:
        if not skipped:
            bar.advance(task)
            if row.status == "error" and not as_json:
                where = "" if row.input in row.error else f"{row.input}: "
                bar.console.print(f"error: {where}{row.error}", markup=False, highlight=False)

    with bar:
        result = run_batch(
            inputs,
            model,
            style,
            out_dir,
            options,
            force,
            retry_errors,
            row_done,
            planned,
        )
    note(engine_line(result["engine"]))
    rows = result.pop("rows")
    if as_json:
        _print(result | {"rows": [vars(r) for r in rows]}, True)
    else:
        rate = f", {result['images_per_s']} images/s" if "images_per_s" in result else ""
        out.print(
            f"{result['ok']} ok, {result['errors']} errors, {result['skipped']} skipped "
            f"({result['processed']} stylized{rate}); table: {result['table']}",
            markup=False,
            highlight=False,
        )
    if result["errors"]:
        raise typer.Exit(1)
