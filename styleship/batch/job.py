"""One batch job: plan, skip what a previous run finished, run the rest, keep the table.

The driver (this module) never decodes a content image: it lists inputs,
checks the bundle and the style once (so a bad style is one line, not an error
per actor), decides what is left to do, hands that to Ray, and records rows
as they arrive. When nothing is left it does not start Ray at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from styleship import _atomic
from styleship._hashing import sha256_file
from styleship._lazy import require
from styleship.batch import table
from styleship.batch.table import Row
from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime.bundle import Bundle
from styleship.runtime.choice import choose
from styleship.runtime.style_bank import parse_spec

FLUSH_EVERY_S = 5.0  # the table is rewritten at most this often while rows arrive


@dataclass
class BatchOptions:
    """Everything that decides what the outputs look like (recorded in batch.json)."""

    alpha: float = 1.0
    preserve_color: bool = False
    max_size: int | None = None
    suffix: str = "_stylized"
    fmt: str | None = None  # ".png", ".jpg", ...; None keeps each input's format
    backend: str | None = None
    precision: str | None = None
    max_pixels: int = im.DEFAULT_MAX_PIXELS
    runner: dict = field(default_factory=dict)  # address, actors, threads, batch_size


def resolve_style(bundle: Bundle, style: str | None) -> tuple[bytes | str | None, str | None]:
    """The style as the actors take it (file bytes, or a bank spec) and how it is recorded."""
    if not bundle.style_code:
        if style is not None:
            raise InputError(f"{bundle.name} has its style in its weights: drop -s")
        return None, None
    if style is None:
        names = bundle.style_bank.names
        listed = f" or one of {', '.join(names)}" if names else ""
        raise InputError(f"give a style with -s: an image file{listed}")
    path = Path(style)
    if path.is_file():
        if not bundle.has_style_input:
            raise InputError(f"{bundle.name} takes no style image; name one of its bank styles")
        data = im.read_bytes(path)
        im.decode(data, "style image")  # refuse an unreadable painting here, once
        return data, f"sha256:{sha256_file(path)}"
    spec = parse_spec(style)
    bank = bundle.style_bank
    if spec is None or not bank.names or any(n not in bank for n, _ in spec):
        listed = f" nor a style in its bank ({', '.join(bank.names)})" if bank.names else ""
        raise InputError(f"style {style!r} is neither an image file{listed}")
    return style, f"bank:{style}"


def _settings(bundle: Bundle, style_record: str | None, options: BatchOptions) -> dict:
    return {
        "bundle": bundle.name,
        "bundle_hash": bundle.hash,
        "style": style_record,
        "alpha": options.alpha,
        "preserve_color": options.preserve_color,
        "max_size": options.max_size,
        "suffix": options.suffix,
        "format": options.fmt,
        "backend": options.backend,
        "precision": options.precision,
    }


def run_batch(
    inputs: list[str],
    model: Path,
    style: str | None,
    out_dir: Path,
    options: BatchOptions,
    force: bool = False,
    retry_errors: bool = False,
    on_row: Callable[[Row, bool], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Stylize `inputs` into `out_dir`; returns the summary (also written to batch.json).

    `on_plan(total, todo)` is called once the skip list is known; `on_row(row, skipped)`
    for every row, skipped ones first.
    """
    files = table.expand_inputs(inputs)
    bundle = Bundle.load(model)
    style_value, style_record = resolve_style(bundle, style)
    # Chosen once here, not per actor: actors starting together would time each other.
    choice = choose(bundle, options.backend, options.precision, log=log)
    out_dir = _atomic.ensure_dir(out_dir)
    settings = _settings(bundle, style_record, options)
    previous = {} if force else table.read_table(out_dir)
    if not force:
        table.check_settings(out_dir, settings)
    targets, refused = table.plan_outputs(files, out_dir, options.suffix, options.fmt)
    rows: dict[str, Row] = {r.input: r for r in refused}
    todo: list[tuple[Path, Path]] = []
    for src, target in targets.items():
        before = previous.get(str(src))
        if table.done_before(before, table.stamp(src), retry_errors):
            rows[str(src)] = before
        else:
            todo.append((src, target))
    skipped = len(rows) - len(refused)
    if todo:  # a missing extra is one line before anything is written
        require("ray.data", "ray")
    if on_plan:
        on_plan(len(files), len(todo))
    for row in rows.values():
        if on_row:
            on_row(row, True)
    order = [str(f) for f in files]

    def flush() -> None:
        table.write_table(out_dir, [rows[k] for k in order if k in rows])

    flush()
    table.write_meta(out_dir, settings, {"status": "running"})
    started = time.perf_counter()
    runner: dict = {}
    if todo:
        from styleship.batch.ray_run import run_on_ray

        last_flush = time.perf_counter()

        def arrived(row: Row) -> None:
            nonlocal last_flush
            rows[row.input] = row
            if on_row:
                on_row(row, False)
            if time.perf_counter() - last_flush > FLUSH_EVERY_S:
                flush()
                last_flush = time.perf_counter()

        worker = {
            "bundle": str(model),
            "style": style_value,
            "options": {
                "alpha": options.alpha,
                "preserve_color": options.preserve_color,
                "max_size": options.max_size,
            },
            "backend": choice.backend,
            "precision": choice.precision,
            "max_pixels": options.max_pixels,
        }
        try:
            runner = run_on_ray(todo, worker, on_row=arrived, **options.runner)
        finally:
            flush()
    elapsed = time.perf_counter() - started
    done = [rows[k] for k in order if k in rows]
    errors = sum(r.status == "error" for r in done)
    processed = len(todo)
    summary = {
        "inputs": len(files),
        "ok": sum(r.status == "ok" for r in done),
        "errors": errors,
        "skipped": skipped,
        "processed": processed,
        "seconds": round(elapsed, 2),
        "engine": choice.brief(),
        **runner,
    }
    if runner.get("run_s"):
        summary["images_per_s"] = round(processed / runner["run_s"], 3)
    table.write_meta(out_dir, settings, summary)
    return summary | {"table": str(out_dir / table.TABLE), "rows": done}
