"""`styleship batch`: planning and the table without Ray, then real runs on a local Ray.

The Ray tests start a local Ray (a few seconds) through the command line, as
a user would, on the shipped demo bundle; they skip when the ray extra is
missing and say how to install it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from conftest import ROOT, run_cli

from styleship.batch import table
from styleship.batch.worker import StylizeWorker
from styleship.errors import InputError

DEMO = ROOT / "assets" / "models" / "stvae-demo.stvae"
PAINTING = ROOT / "assets" / "styles" / "starry_night.jpg"


def _photos(folder, count: int = 3, corrupt: bool = True):
    """`count` small photos of two sizes (so batches mix shapes), and one corrupt JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        h, w = (64, 96) if i % 2 else (80, 80)
        img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 0)
        paths.append(folder / f"p{i}.jpg")
        cv2.imwrite(str(paths[-1]), img)
    if corrupt:
        good = paths[0].read_bytes()
        (folder / "corrupt.jpg").write_bytes(good[: len(good) // 2])
    return paths


def _table(out) -> dict[str, dict]:
    with (out / table.TABLE).open() as fh:
        return {row["input"]: row for row in csv.DictReader(fh)}


# ---- without Ray -------------------------------------------------------------------------


def test_packages_import_without_ray_or_torch():
    code = textwrap.dedent(
        """
        import sys
        import styleship.runtime, styleship.serve, styleship.serve.ui
        import styleship.batch.job, styleship.batch.table, styleship.batch.worker
        import styleship.batch.ray_run, styleship.cli
        bad = sorted(m for m in ("ray", "torch", "pyarrow", "aiohttp") if m in sys.modules)
        print(",".join(bad))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_inputs_from_folders_globs_and_list_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pa = _photos(a, 2, corrupt=False)
    pb = _photos(b, 1, corrupt=False)
    listing = tmp_path / "files.txt"
    listing.write_text(f"# photos\nb/{pb[0].name}\n\n{tmp_path / 'missing.jpg'}\n")
    found = table.expand_inputs([str(a), str(listing), str(a / "p0.*")])
    assert found == [*pa, pb[0], tmp_path / "missing.jpg"]  # in order, once each
    with pytest.raises(InputError, match="no images found"):
        table.expand_inputs([str(tmp_path / "empty*")])


def test_outputs_mirror_input_folders_and_clashes_are_error_rows(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pa = _photos(a, 1, corrupt=False)[0]
    pb = _photos(b, 1, corrupt=False)[0]  # the same file name in another folder
    twin = a / "p0.png"
    cv2.imwrite(str(twin), np.zeros((32, 32, 3), np.uint8))
    targets, refused = table.plan_outputs([pa, pb, twin], tmp_path / "out", "_s", ".png")
    assert targets == {pa: tmp_path / "out/a/p0_s.png", pb: tmp_path / "out/b/p0_s.png"}
    assert [(r.input, r.status) for r in refused] == [(str(twin), "error")]
    assert "same output name" in refused[0].error


def test_worker_writes_outputs_and_error_rows_without_ray(tmp_path):
    photos = _photos(tmp_path / "in", 3)
    inputs = [*photos, tmp_path / "in" / "corrupt.jpg", tmp_path / "in" / "gone.jpg"]
    outputs = [tmp_path / "out" / f"{p.stem}.png" for p in inputs]
    worker = StylizeWorker(str(DEMO), PAINTING.read_bytes(), {"alpha": 1.0}, backend="ort-cpu")
    batch = {
        "input": np.array([str(p) for p in inputs]),
        "output": np.array(list(map(str, outputs))),
    }
    columns = worker(batch)
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "error", "error"]
    assert "truncated" in rows[3]["error"] and "gone.jpg" in rows[4]["error"]
    for row, photo in zip(rows[:3], photos):
        written = cv2.imread(row["output"])
        assert written.shape == cv2.imread(str(photo)).shape
        assert row["size"] == f"{written.shape[1]}x{written.shape[0]}"
    assert not outputs[3].exists() and not outputs[4].exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png", "p2.png"]


def test_a_previous_row_stands_only_while_input_and_output_are_unchanged(tmp_path):
    src = _photos(tmp_path, 1, corrupt=False)[0]
    out = tmp_path / "o.png"
    out.write_bytes(b"result")
    from styleship._hashing import sha256_file

    row = table.Row(str(src), str(out), "80x80", "ok", "", 1.0, sha256_file(out), table.stamp(src))
    assert table.done_before(row, table.stamp(src), retry_errors=False)
    assert not table.done_before(row, "1:2", retry_errors=False)  # the input changed
    out.write_bytes(b"edited")
    assert not table.done_before(row, table.stamp(src), retry_errors=False)
    failed = table.Row(str(src), status="error", error="bad", input_stamp=table.stamp(src))
    assert table.done_before(failed, table.stamp(src), retry_errors=False)
    assert not table.done_before(failed, table.stamp(src), retry_errors=True)


def test_bad_style_and_missing_ray_are_one_line_errors(tmp_path):
    _photos(tmp_path / "in", 1, corrupt=False)
    result = run_cli("batch", tmp_path / "in", "-m", DEMO, "-s", "nope", "-o", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: style 'nope' is neither an image file"]

    blocked = (  # the same run where `import ray` fails, as on an install without the extra
        "import sys; sys.modules['ray'] = None; from styleship.cli import main; "
        f"sys.argv = ['styleship', 'batch', {str(tmp_path / 'in')!r}, '-m', {str(DEMO)!r}, "
        f"'-s', {str(PAINTING)!r}, '-o', {str(tmp_path / 'out')!r}]; main()"
    )
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'styleship[ray]'" in lines[0], result.stderr


# ---- on a local Ray ----------------------------------------------------------------------


@pytest.mark.slow
def test_local_ray_folder_with_a_corrupt_file_then_a_rerun_does_no_work(tmp_path):
    pytest.importorskip("ray.data", reason="needs the ray extra: pip install '.[ray]'")
    photos = _photos(tmp_path / "in", 5)
    out = tmp_path / "out"
    args = ["batch", tmp_path / "in", "-m", DEMO, "-s", PAINTING, "-o", out]
    first = run_cli(*args, "--backend", "ort-cpu", "--batch-size", "4", "--json")
    assert first.returncode == 1, first.stderr[-2000:]  # one input failed
    report = json.loads(first.stdout)
    assert (report["ok"], report["errors"], report["processed"]) == (5, 1, 6)
    assert report["actors"] >= 1 and report["images_per_s"] > 0
    rows = _table(out)
    assert len(rows) == 6
    corrupt = rows[str(tmp_path / "in" / "corrupt.jpg")]
    assert (
        corrupt["status"] == "error" and "truncated" in corrupt["error"] and not corrupt["output"]
    )
    for photo in photos:
        row = rows[str(photo)]
        assert row["status"] == "ok" and row["error"] == ""
        result = cv2.imread(row["output"])
        source = cv2.imread(str(photo))
        assert result.shape == source.shape
        assert np.abs(result.astype(float) - source.astype(float)).mean() > 5
    # nothing half-written: no staging files left beside the outputs
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p.stem}_stylized.jpg" for p in photos] + ["results.csv", "batch.json"]
    )
    stamps = {p: os.stat(p).st_mtime_ns for p in out.iterdir() if p.suffix == ".jpg"}

    second = run_cli(*args, "--backend", "ort-cpu", "--json")
    report = json.loads(second.stdout)
    assert (report["processed"], report["skipped"], report["errors"]) == (0, 6, 1)
    assert "ray_start_s" not in report  # no work: Ray was not even started
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps
    assert _table(out) == rows

    # an output edited by hand is redone, and only that one
    victim = out / f"{photos[2].stem}_stylized.jpg"
    victim.write_bytes(b"not the result")
    third = run_cli(*args, "--backend", "ort-cpu", "--json")
    report = json.loads(third.stdout)
    assert (report["processed"], report["skipped"]) == (1, 5)
    assert cv2.imread(str(victim)) is not None
