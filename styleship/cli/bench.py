"""The benchmark command: run a suite, re-render a run, or compare two runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from styleship.cli._common import JSON_OPT, _print, app, err, out, progress


@app.command()
def bench(
    suite: str = typer.Option(None, help="Suite name (benchmarks/NAME.toml) or a .toml path."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Directory for results and plots."),
    compare: tuple[Path, Path] | None = typer.Option(
        None, help="Compare two result directories (or results.json files): A B."
    ),
    render: Path = typer.Option(None, help="Re-render reports from DIR/results.json."),
    work_dir: Path = typer.Option(
        None, help="Where models built from a config are exported (default: the user cache)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Benchmark methods × backends × precisions × sizes × batches against Gatys.

    Examples: styleship bench --suite cpu-quick --out build/bench;
    styleship bench --compare benchmarks/results/cpu build/bench
    """
    from styleship.bench import report

    if compare:
        rows = report.compare(report.load_results(compare[0]), report.load_results(compare[1]))
        table = Table(title=f"p50 change: {compare[0]} -> {compare[1]}")
        for col in ("case", "A p50 ms", "B p50 ms", "change"):
            table.add_column(col)
        for r in rows:
            case = f"{r['model']} {r['backend']} {r['precision']} {r['size']}² b{r['batch']}"
            case += f" {r['style']} {r['view']}" + (f" {r['budget']} calls" if r["budget"] else "")
            table.add_row(
                case,
                report.fmt(r["a_p50_ms"]),
                report.fmt(r["b_p50_ms"]),
                report.fmt(r["change"], "pct"),
            )
        _print({"rows": rows}, as_json, table)
        return
    if render is not None:
        report.write_reports(report.load_results(render), render)
        _print({"out": str(render)}, as_json, f"re-rendered {render}/results.md and plots")
        return
    if not suite or out_dir is None:
        raise typer.BadParameter("give --suite and --out (or --compare A B, or --render DIR)")
    from styleship.bench.config import load_suite
    from styleship.bench.suite import count_steps, require_device, run_suite
    from styleship.runtime.style_cache import default_cache_dir

    spec = load_suite(suite)
    require_device(spec)
    work = work_dir or default_cache_dir().parent / "bench-models"
    with progress(as_json) as bar:
        task = bar.add_task(spec.name, total=count_steps(spec))
        done = {"n": 0}

        def step(label: str) -> None:
            bar.update(task, completed=done["n"], description=label)
            done["n"] += 1

        results = run_suite(spec, out_dir, work, on_step=step, log=lambda m: err.print(m))
        bar.update(task, completed=done["n"], description=spec.name)
    if as_json:
        _print(results, True)
        return
    out.print((out_dir / "results.md").read_text().split("\n## Gatys")[0], markup=False)
    skipped = sum(r["status"] == "skipped" for r in results["rows"])
    failed = sum(r["status"] == "failed" for r in results["rows"])
    out.print(
        f"wrote {out_dir}/results.{{json,csv,md}} and plots; {skipped} skipped, {failed} failed"
    )
