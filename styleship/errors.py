"""The exception hierarchy (DESIGN.md §10).

The library raises these; only the CLI's top level turns them into
`error: <one line>` and an exit status, so callers of the library keep full
control and a traceback never reaches a user of the command line.
"""


class StyleshipError(Exception):
    """Base of every error styleship raises on purpose."""


class InputError(StyleshipError):
    """A bad image, path or argument supplied by the caller."""


class ModelError(StyleshipError):
    """A bad or mismatched checkpoint, bundle, engine or weights source."""


class BackendUnavailable(StyleshipError):
    """An inference engine or device is missing; the message names what to install."""


class ExportError(StyleshipError):
    """Conversion failed, or the exported graph does not match PyTorch."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an engine's (often multi-line) message, for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
