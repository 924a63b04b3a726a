"""Versioned JSON metadata (checkpoint .json, bundle manifest.json), read with one set of checks."""

from __future__ import annotations

import json
from pathlib import Path

from styleship.errors import ModelError


def read_versioned(path: Path, fmt: str, max_version: int, what: str) -> dict:
    """Parse `path`; refuse other formats and versions newer than `max_version`."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ModelError(f"{path}: not a styleship {what}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise ModelError(
            f"{path}: {what} format {version} is newer than this styleship reads "
            f"({max_version}); upgrade styleship"
        )
    return data
