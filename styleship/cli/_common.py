"""What every command shares: the typer app, the consoles, JSON printing, progress bars."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

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
    """JSON, or the human form: a table, or a line printed as plain text (paths and install
    hints such as "styleship[gpu]" hold brackets that rich would take for markup)."""
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    elif table is not None:
        out.print(table, markup=False)


def _kv_table(title: str, rows: dict) -> Table:
    """Two columns of plain text (never markup: values are paths, versions, hints)."""
    table = Table(title=Text(title), show_header=False)
    for key, value in rows.items():
        table.add_row(Text(str(key)), Text(str(value)))
    return table


def progress(as_json: bool, *extra: TextColumn) -> Progress:
    """A progress bar on stderr, hidden when the command prints JSON."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *extra,
        console=err,
        disable=as_json,
    )


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


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def note(message: str) -> None:
    """A plain status line on stderr (never on stdout, which may carry JSON or an image)."""
    err.print(message, markup=False, highlight=False)


def choice_json(choice) -> dict:
    """The parts of a runtime.choice.Choice a command reports (a dict passes as it is)."""
    return choice if isinstance(choice, dict) else choice.brief()


def engine_line(choice) -> str:
    """What a command ran on and why: the line each run prints (runtime/choice.py)."""
    c = choice_json(choice)
    return f"engine: {c['backend']} {c['precision']} ({c['reason']}; {c['source']})"
