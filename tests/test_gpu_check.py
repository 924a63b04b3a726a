"""The prepared GPU check (benchmarks/gpu_check.py): its dry run resolves every step, its
stand-in run shows what a kill at the budget keeps, and without a GPU it stops with one line."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
WORK = str(ROOT / "build" / "gpu-check-install-")  # the check's temporary install


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leftovers() -> list[str]:
    """Processes still running from a check's install (a bench worker left behind, say)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if WORK in cmdline and int(proc.name) != os.getpid():
            found.append(cmdline)
    return found


def test_the_dry_run_resolves_the_install_suites_and_tests(tmp_path):
    out, kept = tmp_path / "check", tmp_path / "kept"
    r = _run("--dry-run", "--out", str(out), "--copy-to", str(kept))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "check.json").read_text())
    assert summary["mode"] == "dry run" and summary["ok"] is True
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == [
        "install",
        "suite-gpu-quick",
        "suite-gpu-quick-compile",
        "pytest-collect",
    ]
    assert all(s["rc"] == 0 for s in steps.values())
    # The suites resolved from the installed copy, not the checkout, and the gpu tests collect.
    assert "24 cases, 1 Gatys sizes" in (out / "logs" / "suite-gpu-quick.log").read_text()
    collected = (out / "logs" / "pytest-collect.log").read_text()
    assert "test_gpu.py" in collected and "test_tensorrt.py" in collected
    assert json.loads((kept / "check.json").read_text()) == summary
    assert (kept / "gpu-check.tar.gz").stat().st_size > 0
    assert not list((ROOT / "build").glob("gpu-check-install-*"))  # the install is removed


def test_a_kill_at_the_budget_keeps_the_rows_and_the_check(tmp_path):
    """The stand-in run (the real steps, CPU suites): the budget kills the benchmark in the
    middle of its cases, with its worker; the rows it measured, check.json and the archive
    are where a device run's $OUT would be."""
    out, kept = tmp_path / "check", tmp_path / "kept"
    r = _run("--stand-in", "--budget", "45", "--out", str(out), "--copy-to", str(kept))
    assert r.returncode == 1, r.stdout + r.stderr  # a step timed out: the check says so
    assert sorted(p.name for p in kept.iterdir()) == [
        "check.json",
        "gpu-check.tar.gz",
        "results-gpu-quick.json",
    ]
    summary = json.loads((kept / "check.json").read_text())
    assert summary["finished"] is True and summary["ok"] is False
    steps = {s["step"]: s for s in summary["steps"]}
    assert steps["bench-gpu-quick"]["rc"] == "timeout"
    assert steps["bench-gpu-quick-compile"]["rc"] is None  # skipped, with the reason
    assert "torch.compile" in steps["bench-gpu-quick-compile"]["skipped"]
    results = json.loads((kept / "results-gpu-quick.json").read_text())
    rows = results["rows"]
    assert results["complete"] is False and 1 <= len(rows) < 24  # 24 cases: cut short
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in rows)
    assert summary["suites"]["gpu-quick"] == {"complete": False, "rows": {"ok": len(rows)}}
    with tarfile.open(kept / "gpu-check.tar.gz") as tar:
        names = tar.getnames()
        kept_rows = json.load(tar.extractfile("check/bench-gpu-quick/results.json"))["rows"]
    assert "check/logs/bench-gpu-quick.log" in names and kept_rows == rows
    assert not _leftovers()


def test_a_check_stopped_from_outside_stops_its_step_and_says_where(tmp_path):
    out, kept = tmp_path / "check", tmp_path / "kept"
    args = ["--stand-in", "--out", str(out), "--copy-to", str(kept)]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (kept / "results-gpu-quick.json").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (kept / "results-gpu-quick.json").exists(), "no row came within two minutes"
        proc.send_signal(signal.SIGTERM)  # what a command limit sends first
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
    summary = json.loads((kept / "check.json").read_text())
    assert summary["finished"] is False and summary["ok"] is False
    assert summary["steps"][-1]["step"] == "bench-gpu-quick"
    assert summary["steps"][-1]["rc"] == "stopped"
    assert json.loads((kept / "results-gpu-quick.json").read_text())["rows"]
    assert not _leftovers()


def test_each_missing_or_too_old_package_is_one_line_and_its_steps_are_skipped(monkeypatch):
    gpu_check = _script()
    monkeypatch.setitem(gpu_check.PACKAGES, "numpy", (("numpy",), "999.0", "every step"))
    monkeypatch.setitem(gpu_check.PACKAGES, "nonesuch", (("nonesuch",), "1.0", "nothing real"))
    found = gpu_check.packages()
    assert found["numpy"]["status"] == "too old" and found["nonesuch"]["status"] == "missing"
    assert found["torch"]["status"] == "ok"
    lines: list[str] = []
    check = gpu_check.Check.__new__(gpu_check.Check)  # no folders: only what it says
    check.say, check.write = lines.append, lambda: None
    gpu_check.check_packages(check)
    assert [ln for ln in lines if "numpy" in ln or "nonesuch" in ln] == [
        f"package numpy {found['numpy']['version']} is older than 999.0: every step",
        "package nonesuch is missing: nothing real cannot run",
    ]
    assert check.can("bench") == ["numpy"] and check.can("dry") == ["numpy"]


def test_the_default_budget_fits_one_ten_minute_command_with_a_margin():
    gpu_check = _script()
    assert gpu_check.parser().parse_args([]).budget == gpu_check.BUDGET_S
    # Past the budget a step is killed within two grace periods, then one last write:
    # about seven minutes of work leave a 600 s command its start, copy back and margin.
    assert gpu_check.BUDGET_S >= 360 and gpu_check.BUDGET_S + 2 * gpu_check.KILL_GRACE_S <= 450


def test_without_a_gpu_it_stops_with_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real check would run")
    r = _run("--out", str(tmp_path / "check"))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no CUDA GPU here" in r.stderr
    assert not (tmp_path / "check").exists()


def test_every_make_target_that_is_not_a_file_is_phony():
    """A file or folder named like a target (build/gpu-check, say) must not stop make from
    running it: every target but the install stamp is declared .PHONY."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    phony = set(next(ln for ln in text.splitlines() if ln.startswith(".PHONY:")).split()[1:])
    targets = set(re.findall(r"^([A-Za-z][\w-]*):(?!=)", text, flags=re.MULTILINE))
    assert "gpu-check" in targets and targets <= phony, sorted(targets - phony)
