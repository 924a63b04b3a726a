"""Import optional heavy dependencies only where they are used."""

import importlib
from types import ModuleType

from styleship.errors import BackendUnavailable


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or explain which extra provides it.

    Called inside the function that needs the module, never at import time,
    so `--help` and the torch-free runtime work without it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"{module} is not installed ({exc}); install it with: pip install 'styleship[{extra}]'"
        ) from exc
