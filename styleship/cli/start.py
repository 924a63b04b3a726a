"""Commands a new user runs first: doctor (what this machine runs) and demo."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from styleship.cli._common import JSON_OPT, _kv_table, _print, app, err, out


@app.command()
def doctor(
    models: list[Path] = typer.Option(
        None, "--model", "-m", help="Also show the engine each bundle runs on here, and why."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Show versions, usable backends, GPUs and conflicting packages.

    With --model: the backend and precision stylize/serve pick for the bundle on this
    machine (measured once, then cached), every pair's time and why others were left out.

    Example: styleship doctor --json

    Example: styleship doctor -m assets/models/vqvae-demo.vqvae
    """
    from styleship.doctor import diagnose, engine_choices

    report = diagnose()
    if models:
        report["engines"] = engine_choices([str(m) for m in models])
    rows = {
        "styleship": report["styleship"],
        "python": report["python"],
        **{f"backend {k}": v for k, v in report["backends"].items()},
        "gpus": ", ".join(report["gpus"]) or "none",
        "tensorrt": report["tensorrt"],
        "serve": report["serve"],
        **{k: v or "-" for k, v in report["packages"].items()},
    }
    for path, c in report.get("engines", {}).get("chosen", {}).items():
        rows[f"engine {path}"] = f"{c['backend']} {c['precision']}: {c['reason']} ({c['source']})"
        for m in c["measured"]:
            rows[f"  {m['backend']} {m['precision']}"] = f"{m['p50_ms']:g} ms; {m['quality']}"
        for pair, why in c["skipped"].items():
            rows[f"  {pair}"] = f"not timed: {why}"
    _print(report, as_json, _kv_table("styleship doctor", rows))
    for problem in report["problems"]:
        err.print(f"problem: {problem}", markup=False, highlight=False)
    if report["problems"]:
        raise typer.Exit(1)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("build/demo"), "--out", "-o", help="Where to write results."),
    model: Path = typer.Option(
        None, "--model", "-m", help="Bundle to use (default: the shipped one)."
    ),
    backend: str = typer.Option(
        "auto", help="auto: each bundle where stylize would run it (fastest cleared here)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Stylize the sample photos with the sample paintings and write a contact sheet.

    Example: styleship demo --out build/demo
    """
    from styleship.demo import run_demo

    with err.status("preparing the demo") as status:
        auto = None if backend == "auto" else backend
        result = run_demo(out_dir, model, auto, log=lambda m: status.update(m))
    if as_json:
        _print(result, True)
        return
    for run in result["bundles"]:
        engine = run["engine"]
        out.print(
            f"[bold]{escape(str(run['bundle']))}[/] ({run['family']}) on "
            f"{engine['backend']} {engine['precision']} ({escape(engine['reason'])})"
        )
        if run["untrained"]:
            out.print(
                "  [yellow]note:[/] UNTRAINED (seeded random) weights: the pipeline runs "
                "end to end, but the images are not real stylizations."
            )
        elif run["note"]:
            out.print(f"  [yellow]note:[/] {escape(run['note'])}")
        out.print(
            f"  {len(run['outputs'])} images, {run['ms_per_image']:.0f} ms per image "
            f"(decode, stylize, encode); contact sheet: {escape(str(run['contact_sheet']))}"
        )
    if result["pretrained_missing"]:
        out.print(f"[yellow]note:[/] no pretrained model: {escape(result['pretrained_missing'])}")
    clip = result["clip"]
    out.print(
        f"[bold]video[/]: {escape(str(clip['output']))} (stability {clip['stability']}: flicker "
        f"{clip['flicker_without']} → {clip['flicker_with']} of 255 in static regions)"
    )
