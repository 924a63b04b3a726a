"""The prepared GPU check (benchmarks/gpu_check.py): its dry run resolves every step here, and
on a machine without a GPU the real run stops with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


def test_the_dry_run_resolves_the_install_suites_and_tests(tmp_path):
    out = tmp_path / "check"
    r = _run("--dry-run", "--out", str(out), "--archive", str(tmp_path / "check.tar.gz"))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "check.json").read_text())
    assert summary["dry_run"] is True and summary["ok"] is True
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == [
        "install",
        "suite-gpu-quick",
        "suite-gpu-quick-compile",
        "pytest-collect",
    ]
    assert all(s["rc"] == 0 for s in steps.values())
    # The suites resolved from the installed copy, not the checkout, and the gpu tests collect.
    assert "48 cases, 1 Gatys sizes" in (out / "logs" / "suite-gpu-quick.log").read_text()
    collected = (out / "logs" / "pytest-collect.log").read_text()
    assert "test_gpu.py" in collected and "test_tensorrt.py" in collected
    assert (tmp_path / "check.tar.gz").stat().st_size > 0
    assert not list((ROOT / "build").glob("gpu-check-install-*"))  # the install is removed


def test_without_a_gpu_it_stops_with_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real check would run")
    r = _run("--out", str(tmp_path / "check"))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no CUDA GPU here" in r.stderr
    assert not (tmp_path / "check").exists()
