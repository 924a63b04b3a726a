"""The `styleship` command line: parse, call the library, print. Nothing else lives here.

One module per group of commands; importing them registers the commands on `app`.
"""

from __future__ import annotations

import sys

from styleship.cli import batch, bench, deploy, models, run, serve, start  # noqa: F401  (registers the commands)
from styleship.cli._common import app, err
from styleship.errors import StyleshipError


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
