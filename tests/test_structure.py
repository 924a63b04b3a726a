"""The package's layering, read from the source: the runtime never reaches back into export."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

RUNTIME = ROOT / "styleship" / "runtime"


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (absolute names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_runtime_does_not_import_export():
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in mods if m.startswith("styleship.export"))
        for path in sorted(RUNTIME.rglob("*.py"))
        if (mods := _imported_modules(path))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
