"""What a batch run does and what it did: inputs, output names, and the results table.

Kept free of Ray so that planning, resuming and the table are plain code that
the tests (and a machine without Ray) can run. The table is `results.csv` in
the output folder, one row per input (input, output, size, status, error,
time) plus two columns that make resuming safe: the output's sha256 and a
stamp of the input (bytes and mtime). `batch.json` beside it holds the
settings that produced the outputs and the last run's summary. Both are
written atomically, and rewritten as rows arrive, so an interrupted run
resumes from what it had finished.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from styleship import _atomic
from styleship._hashing import sha256_file
from styleship._jsonfile import read_versioned
from styleship.errors import InputError
from styleship.runtime import image as im

TABLE = "results.csv"
META = "batch.json"
FORMAT = "styleship-batch"
FORMAT_VERSION = 1
LIST_SUFFIXES = (".txt", ".lst", ".list")  # an input with one of these is a list of paths


@dataclass
class Row:
    """One input's outcome. `status` is "ok" or "error"; `size` is the output's W×H."""

    input: str
    output: str = ""
    size: str = ""
    status: str = ""
    error: str = ""
    time_ms: float = 0.0
    output_sha256: str = ""
    input_stamp: str = ""


COLUMNS = tuple(f.name for f in fields(Row))


def _read_list(path: Path) -> list[Path]:
    """A list file: one path per line (relative to the file's folder); # starts a comment."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the list file {path}: {exc}") from None
    entries = [line.split("#", 1)[0].strip() for line in lines]
    return [path.parent / e if not Path(e).is_absolute() else Path(e) for e in entries if e]


def expand_inputs(args: list[str]) -> list[Path]:
    """Directories (their images), globs, image paths and list files, in order, once each.

    A listed path that is missing stays in: it becomes an error row, not a crash.
    """
    found: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            found += _read_list(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in im.READ_EXTENSIONS)
        elif any(ch in arg for ch in "*?["):  # absolute or relative, ** for subfolders
            found += sorted(Path(p) for p in glob.glob(arg, recursive=True) if Path(p).is_file())
        else:
            found.append(path)
    if not found:
        raise InputError(f"no images found in {' '.join(args)}")
    return list(dict.fromkeys(found))


def stamp(path: Path) -> str:
    """Bytes and modification time: an input whose stamp changed is stylized again."""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def plan_outputs(
    inputs: list[Path], out_dir: Path, suffix: str, fmt: str | None
) -> tuple[dict[Path, Path], list[Row]]:
    """Each input's output path, mirroring the input folders under `out_dir`.

    Inputs from several folders keep their layout below the folders' common
    parent, so same-named files never collide. Two inputs that would still
    share an output (a.jpg and a.png with a png format) or an output that
    would overwrite an input become error rows.
    """
    resolved = {p: p.resolve() for p in inputs}
    root = Path(os.path.commonpath([str(r.parent) for r in resolved.values()]))
    targets: dict[Path, Path] = {}
    owners: dict[Path, Path] = {}
    refused: list[Row] = []
    sources = set(resolved.values())
    for path, real in resolved.items():
        ext = fmt or (path.suffix.lower() if path.suffix.lower() in im.WRITE_EXTENSIONS else ".png")
        target = out_dir / real.parent.relative_to(root) / f"{path.stem}{suffix}{ext}"
        key = target.resolve()
        if key in sources:
            error = "its output would overwrite an input"
            refused.append(Row(str(path), status="error", error=error))
        elif key in owners:
            other = owners[key]
            refused.append(Row(str(path), status="error", error=f"same output name as {other}"))
        else:
            owners[key] = path
            targets[path] = target
    return targets, refused


def read_table(out_dir: Path) -> dict[str, Row]:
    path = out_dir / TABLE
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise InputError(f"{path} is not a styleship batch table; use another -o")
        rows = {}
        for raw in reader:
            raw["time_ms"] = float(raw["time_ms"] or 0)
            rows[raw["input"]] = Row(**raw)
        return rows


def write_table(out_dir: Path, rows: list[Row]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row) | {"time_ms": f"{row.time_ms:.1f}"})
    return _atomic.write_text(out_dir / TABLE, buf.getvalue())


def read_settings(out_dir: Path) -> dict | None:
    path = out_dir / META
    if not path.is_file():
        return None
    return read_versioned(path, FORMAT, FORMAT_VERSION, "batch record").get("settings")


def write_meta(out_dir: Path, settings: dict, summary: dict) -> Path:
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "summary": summary,
    }
    return _atomic.write_text(out_dir / META, json.dumps(record, indent=2) + "\n")


def check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to mix outputs of different runs in one folder (they would look finished)."""
    before = read_settings(out_dir)
    if before is None or before == settings:
        return
    changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
    raise InputError(
        f"{out_dir} holds results of another run ({', '.join(changed)} differ); "
        "use another -o, or --force to redo them all"
    )


def done_before(row: Row | None, current_stamp: str, retry_errors: bool) -> bool:
    """Whether a previous row still stands: same input, and its output intact (or the
    same input failed before, unless errors are retried)."""
    if row is None or not current_stamp or row.input_stamp != current_stamp:
        return False
    if row.status == "error":
        return not retry_errors
    output = Path(row.output)
    return row.status == "ok" and output.is_file() and sha256_file(output) == row.output_sha256
