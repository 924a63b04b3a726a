"""One prepared run for a lent GPU machine: install, GPU tests, quick GPU benchmarks, one folder.

Such a machine has no internet and a Python that already holds PyTorch (CUDA),
cuda-bindings, onnx, the CPU onnxruntime, OpenCV, typer, rich, pytest and the
benchmark's helpers; it has neither TensorRT nor onnxruntime-gpu, and the loan
is short. So this script:

1. installs styleship without its dependencies (`pip install --no-deps
   --no-build-isolation --no-index --target`) into a temporary folder, with
   links to the checkout's assets/ and benchmarks/ beside the package, and
   runs everything below from that install, not the checkout;
2. runs `pytest -m gpu`;
3. runs the `gpu-quick` suite, then `gpu-quick-compile` if time is left
   (each its own results.json, so a slow compile costs only its own rows);
4. writes the environment, every step's log and a summary (`check.json`)
   into one folder, and optionally a .tar.gz of it (what a device run sends back).

On a machine without a CUDA GPU it stops with one line. `--dry-run` needs no
GPU: it checks that every import, suite and step resolves (the install and
the test collection included) and runs nothing long; CI runs it.

    python3 benchmarks/gpu_check.py --out build/gpu-check [--archive OUT.tar.gz]
    python3 benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("gpu-quick", "gpu-quick-compile")
# Imports the steps need: what fails without each.
REQUIRED = {
    "numpy": "everything",
    "cv2": "image I/O (opencv-python-headless)",
    "typer": "the CLI",
    "rich": "the CLI",
    "torch": "the torch backends, Gatys and the full-width model's export",
    "onnx": "the full-width model's export",
    "onnxscript": "torch's ONNX exporter",
    "onnxruntime": "export parity checks and style codes (ONNX Runtime CPU)",
    "safetensors": "checkpoints",
    "psutil": "the benchmark's environment record",
    "pytest": "the gpu tests",
}
OPTIONAL = {
    "skimage": "quality scores (SSIM) in the benchmark",
    "matplotlib": "the benchmark's plots",
    "cuda.bindings": "the cuda-python tests (tests/test_gpu.py)",
    "tensorrt": "TensorRT tests and rows (skipped without it)",
}
MIN_COMPILE_S = 150  # start gpu-quick-compile only with this much of the budget left


class Check:
    """Runs steps in order, each with a log file and a time limit, within one budget."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.logs = out, out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.start, self.budget = time.monotonic(), budget_s
        self.steps: list[dict] = []

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:5.0f}s] {text}", flush=True)

    def run(self, name: str, args: list[str], limit_s: float, cwd: Path, env: dict) -> bool:
        limit = max(1.0, min(limit_s, self.left()))
        log = self.logs / f"{name}.log"
        t0 = time.monotonic()
        with log.open("w") as fh:
            fh.write(f"$ {' '.join(args)}\n(cwd {cwd}, limit {limit:.0f}s)\n\n")
            fh.flush()
            try:
                rc = subprocess.run(
                    args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=limit
                ).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        seconds = round(time.monotonic() - t0, 1)
        self.steps.append({"step": name, "rc": rc, "seconds": seconds, "log": f"logs/{log.name}"})
        self.say(f"{name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {seconds}s, log {log}")
        return rc == 0

    def skip(self, name: str, why: str) -> None:
        self.steps.append({"step": name, "rc": None, "skipped": why})
        self.say(f"{name}: skipped ({why})")


def gpu_name() -> tuple[str | None, str]:
    """(the first CUDA GPU's name as PyTorch sees it, or None; why not)."""
    try:
        import torch
    except ImportError:
        return None, f"this Python ({sys.executable}) has no PyTorch"
    if not torch.cuda.is_available():
        return None, "PyTorch sees no CUDA GPU"
    return torch.cuda.get_device_name(0), ""


def missing_imports() -> tuple[dict[str, str], dict[str, str]]:
    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except ModuleNotFoundError:  # a parent package is missing
            return True

    return (
        {m: why for m, why in REQUIRED.items() if absent(m)},
        {m: why for m, why in OPTIONAL.items() if absent(m)},
    )


def install(check: Check, work: Path) -> dict | None:
    """styleship into work/site, beside links to the checkout's assets/ and benchmarks/
    (the package looks for both beside itself); returns the steps' environment."""
    src, site = work / "src", work / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "styleship", src / "styleship", ignore=shutil.ignore_patterns("__pycache__")
    )
    args = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    args += ["--no-index", "--no-compile", "--quiet", "--target", str(site), str(src)]
    env = os.environ | {"PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1", "PIP_NO_INPUT": "1"}
    if not check.run("install", args, 180, work, env):
        return None
    for name in ("assets", "benchmarks"):  # where the checkout has them: beside the package
        (site / name).symlink_to(ROOT / name, target_is_directory=True)
    probe = "import styleship, sys; print(styleship.__file__); sys.exit(0)"
    found = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True)
    where = found.stdout.decode().strip()
    if not where.startswith(str(site)):
        check.say(f"install: styleship resolves to {where or found.stderr.decode()[-200:]}")
        return None
    return env


def environment(check: Check, work: Path, env: dict) -> None:
    """environment.json: the benchmark's own record (from the install) and nvidia-smi."""
    code = (
        "import json; from styleship.bench.env import environment; "
        "print(json.dumps(environment(), indent=2))"
    )
    record = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True)
    facts: dict = {"python": sys.executable, "python_version": platform.python_version()}
    try:
        facts |= {"styleship": json.loads(record.stdout)}
    except json.JSONDecodeError:
        facts["styleship_error"] = record.stderr.decode(errors="replace")[-500:]
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True)
        facts["nvidia_smi"] = smi.stdout.splitlines()
    (check.out / "environment.json").write_text(json.dumps(facts, indent=2) + "\n")


def dry_run(check: Check, work: Path) -> int:
    """Everything the real run needs, resolved without a GPU or a long step."""
    required, optional = missing_imports()
    for module, why in optional.items():
        check.say(f"optional {module} missing: {why}")
    if required:
        listing = "; ".join(f"{m} ({why})" for m, why in required.items())
        check.say(f"missing: {listing}")
        return 1
    env = install(check, work)
    if env is None:
        return 1
    for suite in SUITES:
        code = (
            "from styleship.bench.config import load_suite; "
            "from styleship.runtime.bundle import Bundle; "
            "from styleship.models.registry import get_family; "
            f"s = load_suite({suite!r}); cases = s.cases(); "
            "[Bundle.load(m.bundle) if m.bundle else get_family(m.family) "
            "for m in s.models.values()]; "
            "print(len(cases), 'cases,', len(s.gatys.sizes), 'Gatys sizes')"
        )
        if not check.run(f"suite-{suite}", [sys.executable, "-c", code], 120, work, env):
            return 1
    tests = [sys.executable, "-m", "pytest", str(ROOT / "tests"), "-m", "gpu", "--collect-only"]
    ok = check.run("pytest-collect", [*tests, "-q", "-p", "no:cacheprovider"], 300, work, env)
    return 0 if ok else 1


def real_run(check: Check, work: Path) -> int:
    required, optional = missing_imports()
    if required:
        check.say("missing: " + "; ".join(f"{m} ({why})" for m, why in required.items()))
        return 1
    for module, why in optional.items():
        check.say(f"optional {module} missing: {why}")
    env = install(check, work)
    if env is None:
        return 1
    environment(check, work, env)
    tests = [sys.executable, "-m", "pytest", str(ROOT / "tests"), "-m", "gpu", "-q", "-ra"]
    check.run("pytest-gpu", [*tests, "-p", "no:cacheprovider"], 240, work, env)
    models = work / "bench-models"  # the full-width model's export, shared by both suites
    for suite in SUITES:
        if suite != SUITES[0] and check.left() < MIN_COMPILE_S:
            check.skip(f"bench-{suite}", f"{check.left():.0f}s of the budget left")
            continue
        args = [sys.executable, "-m", "styleship", "bench", "--suite", suite]
        args += ["--out", str(check.out / f"bench-{suite}"), "--work-dir", str(models)]
        check.run(f"bench-{suite}", args, check.left(), work, env)
    failed = [s["step"] for s in check.steps if s.get("rc") not in (0, None)]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check" / stamp)
    parser.add_argument("--dry-run", action="store_true", help="resolve everything, run nothing")
    parser.add_argument("--budget", type=float, default=660, help="seconds for all steps")
    parser.add_argument("--archive", type=Path, help="also write the folder as this .tar.gz")
    args = parser.parse_args(argv)
    if not args.dry_run:
        name, why = gpu_name()
        if name is None:
            print(f"gpu-check: no CUDA GPU here ({why}); run it on a GPU machine", file=sys.stderr)
            return 1
    out = args.out.resolve()
    check = Check(out, args.budget)
    check.say(f"gpu-check {'dry run' if args.dry_run else f'on {name}'}, writing {out}")
    # Under the checkout's build/, so the install's `git` lookups still find the repository.
    (ROOT / "build").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-install-", dir=ROOT / "build"))
    rc = 1
    try:
        rc = dry_run(check, work) if args.dry_run else real_run(check, work)
    finally:  # the summary and the archive are written whatever happened
        shutil.rmtree(work, ignore_errors=True)
        summary = {"dry_run": args.dry_run, "ok": rc == 0, "steps": check.steps}
        (out / "check.json").write_text(json.dumps(summary, indent=2) + "\n")
        if args.archive:
            with tarfile.open(args.archive, "w:gz") as tar:
                tar.add(out, arcname=out.name)
    check.say(f"gpu-check {'passed' if rc == 0 else 'FAILED'}: {out / 'check.json'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
