"""Atomic writes: missing directories are made, and a killed export leaves nothing for long."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from styleship import _atomic
from styleship.errors import InputError


def test_writes_create_missing_parent_directories(tmp_path):
    target = tmp_path / "new" / "deeper" / "a.txt"
    _atomic.write_text(target, "x")
    assert target.read_text() == "x"
    with _atomic.staged_dir(tmp_path / "fresh" / "bundle.stvae") as stage:
        (stage / "manifest.json").write_text("{}")
    assert (tmp_path / "fresh" / "bundle.stvae" / "manifest.json").is_file()


def test_directories_that_cannot_be_made_or_written_are_one_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="a parent is a file"):
        _atomic.write_text(tmp_path / "file" / "sub" / "a.txt", "x")
    with pytest.raises(InputError, match="is a file"):
        _atomic.ensure_dir(tmp_path / "file")
    with pytest.raises(InputError, match="/proc"):
        _atomic.write_text("/proc/styleship-test/a.txt", "x")


def _killed_stage(target) -> str:
    """Enter staged_dir in a child process and SIGKILL it there, as a killed export would be."""
    code = (
        "import sys, time\n"
        "from styleship import _atomic\n"
        f"with _atomic.staged_dir({str(target)!r}) as stage:\n"
        "    (stage / 'half.onnx').write_bytes(b'x')\n"
        "    print(stage.name, flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    name = child.stdout.readline().strip()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    return name


def test_the_next_export_removes_stages_of_killed_processes_only(tmp_path):
    target = tmp_path / "model.stvae"
    dead = _killed_stage(target)
    assert (tmp_path / dead / "half.onnx").is_file()
    live = tmp_path / f".model.stvae.{os.getpid()}@{_atomic._host()}.abcdefgh.tmp"
    young = tmp_path / ".model.stvae.ijklmnop.tmp"  # untagged, as older versions wrote them
    old = tmp_path / ".model.stvae.qrstuvwx.tmp"
    other = tmp_path / ".model.stvae.v2.12345678.tmp"  # a stage of "model.stvae.v2"
    for d in (live, young, old, other):
        d.mkdir()
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    os.utime(other, (week_ago, week_ago))
    with _atomic.staged_dir(target) as stage:
        (stage / "manifest.json").write_text("{}")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["model.stvae", live.name, young.name, other.name])
