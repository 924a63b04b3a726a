"""One prepared run for a lent GPU machine: numbers back from one 10-minute device command.

Such a machine has no internet, a `python3` with PyTorch (CUDA), cuda-bindings, onnx,
the CPU onnxruntime, OpenCV, pytest and the benchmark's helpers, neither TensorRT nor
onnxruntime-gpu, and a loan of minutes. So this script:

1. checks package versions up front: one line for each missing or too-old package,
   and the steps that need one are skipped, not the run;
2. installs styleship without its dependencies (`pip install --no-deps --no-index
   --target`; a plain copy if pip fails) into a temporary folder, with links to the
   checkout's assets/ and benchmarks/, and runs every step from that install;
3. runs, most valuable first: the `gpu-quick` suite (PyTorch eager fp32, tf32, fp16,
   bf16 at 512², batch 1 and 16, then Gatys-300 at 512²), `pytest -m gpu`, and
   `gpu-quick-compile` (torch.compile) if time remains.

The default budget (420 s of work) leaves a 10-minute command three minutes for the
machine's start, the copy back and a margin. Every step is a process group of its own,
killed whole when its share of the budget runs out. The suites rewrite their
results.json after every case; check.json (each step's outcome and the rows so far) is
rewritten after every step and every REFRESH_S during one, and with `--copy-to DIR` (a
device run's $OUT) so are DIR/check.json, DIR/gpu-check.tar.gz (the whole folder) and
DIR/results-<suite>.json: a command killed from outside still leaves all of them.

    python3 benchmarks/gpu_check.py --out /tmp/gpu-check --copy-to "$OUT"
    python3 benchmarks/gpu_check.py --dry-run            # resolves every step; CI runs it
    python3 benchmarks/gpu_check.py --stand-in --budget 60 --copy-to build/kept

`--dry-run` needs no GPU and runs nothing long. `--stand-in` needs no GPU either: it
runs the real steps with the GPU suites replaced by a CPU stand-in (torch fp32/bf16
on the demo bundles at 64-128², more cases than a short budget holds), to show what a
kill at the budget keeps.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("gpu-quick", "gpu-quick-compile")
BUDGET_S = 420  # work; a 10-minute command also holds the start, the copy back and a margin
REFRESH_S = 15  # check.json and the archive during a long step
KILL_GRACE_S = 5  # SIGTERM, then SIGKILL, to a step's whole process group
PYTEST_S = 90  # the most pytest -m gpu gets; gpu-quick leaves it up to a quarter of its time
MIN_COMPILE_S = 60  # start gpu-quick-compile only with this much of the budget left
# module -> (distributions that provide it, lowest version, what needs it). Floors: the
# versions the device image is recorded with (torch 2.11, onnx 1.23, onnxruntime 1.30,
# onnxscript 0.7, safetensors 0.8), the runtime's own (numpy, OpenCV), and the first
# releases with what the steps call (cuda.bindings.runtime: 12.6; pytest's -p/-m: 8).
PACKAGES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "torch": (("torch",), "2.11", "every benchmark row and GPU test"),
    "numpy": (("numpy",), "1.26", "every step"),
    "cv2": (("opencv-python-headless", "opencv-python"), "4.11", "image I/O"),
    "safetensors": (("safetensors",), "0.8", "checkpoints (the torch rows)"),
    "onnxruntime": (("onnxruntime",), "1.30", "the demo bundles' style codes (ORT CPU)"),
    "onnx": (("onnx",), "1.23", "the dry run's suite checks"),
    "pytest": (("pytest",), "8.0", "the GPU tests (pytest -m gpu)"),
    "cuda.bindings": (("cuda-bindings", "cuda-python"), "12.6", "the cuda-python GPU tests"),
    "triton": (("triton",), "3.0", "torch.compile on the GPU (gpu-quick-compile)"),
    "skimage": (("scikit-image",), "0.22", "the SSIM scores that finish a suite"),
    "matplotlib": (("matplotlib",), "3.8", "the benchmark's plots"),
    "psutil": (("psutil",), "5.9", "the environment record"),
}
NEEDS = {  # step -> modules it cannot run without
    "bench": ("torch", "numpy", "cv2", "safetensors", "onnxruntime"),
    "pytest": ("torch", "numpy", "cv2", "safetensors", "onnxruntime", "pytest"),
    "compile": ("torch", "numpy", "cv2", "safetensors", "onnxruntime", "triton"),
    "dry": ("numpy", "cv2", "onnx"),
}
# Runs a suite without the CLI (typer and rich are no step's business).
BENCH = (
    "import sys; from pathlib import Path; from styleship.bench.config import load_suite; "
    "from styleship.bench.suite import run_suite; say = lambda m: print(m, flush=True); "
    "run_suite(load_suite(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), say, say)"
)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text.split("+")[0])[:3])


def packages() -> dict[str, dict]:
    """Per module: its version and whether it is there and new enough."""
    out = {}
    for module, (dists, floor, why) in PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing
            found = False
        version = None
        for dist in dists:
            try:
                version = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        status = (
            "missing"
            if not found
            else "too old"
            if version and (_version(version) < _version(floor))
            else "ok"
        )
        out[module] = {"version": version, "floor": floor, "status": status, "for": why}
    return out


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Check:
    """Runs steps in order, each in its own process group and time limit, within one
    budget; keeps check.json (and the copies in `copy_to`) current throughout."""

    def __init__(self, out: Path, budget_s: float, copy_to: Path | None, mode: str) -> None:
        self.out, self.logs, self.copy_to, self.mode = out, out / "logs", copy_to, mode
        self.logs.mkdir(parents=True, exist_ok=True)
        if copy_to:
            copy_to.mkdir(parents=True, exist_ok=True)
        self.start, self.budget = time.monotonic(), budget_s
        self.steps: list[dict] = []
        self.packages: dict[str, dict] = {}
        self.running: str | None = None
        self.finished = False
        self.rc: int | None = None  # the run's exit status, once it has one

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:5.0f}s] {text}", flush=True)

    def can(self, need: str) -> list[str]:
        """The modules step kind `need` lacks here (missing or too old)."""
        return [m for m in NEEDS[need] if self.packages.get(m, {}).get("status") != "ok"]

    def suites(self) -> dict[str, dict]:
        """Each suite's rows so far, counted by status, from its results.json."""
        out = {}
        for path in sorted(self.out.glob("bench-*/results.json")):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            counts: dict[str, int] = {}
            for row in doc.get("rows", []):
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            out[path.parent.name[6:]] = {"complete": doc.get("complete", True), "rows": counts}
        return out

    def write(self) -> None:
        """check.json, and into `copy_to` check.json, the archive and each results.json."""
        failed = [s["step"] for s in self.steps if s.get("rc") not in (0, None)]
        summary = {
            "mode": self.mode,
            "ok": self.finished and not failed and self.rc == 0,
            "finished": self.finished,
            "running": self.running,
            "budget_s": self.budget,
            "elapsed_s": round(time.monotonic() - self.start, 1),
            "packages": self.packages,
            "steps": self.steps,
            "suites": self.suites(),
        }
        data = (json.dumps(summary, indent=2) + "\n").encode()
        _atomic(self.out / "check.json", data)
        if not self.copy_to:
            return
        _atomic(self.copy_to / "check.json", data)
        for path in self.out.glob("bench-*/results.json"):
            _atomic(self.copy_to / f"results-{path.parent.name[6:]}.json", path.read_bytes())
        tmp = self.copy_to / ".gpu-check.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(self.out, arcname=self.out.name)
        os.replace(tmp, self.copy_to / "gpu-check.tar.gz")

    def run(self, name: str, args: list[str], limit_s: float, cwd: Path, env: dict) -> bool:
        """One step; killed, with everything it started, when its limit is reached."""
        limit = max(1.0, min(limit_s, self.left()))
        log = self.logs / f"{name}.log"
        t0, rc = time.monotonic(), None
        self.running = name
        self.say(f"{name}: started, limit {limit:.0f}s")
        with log.open("w") as fh:
            fh.write(f"$ {' '.join(args)}\n(cwd {cwd}, limit {limit:.0f}s)\n\n")
            fh.flush()
            proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                while rc is None:
                    remaining = limit - (time.monotonic() - t0)
                    if remaining <= 0:
                        _kill_group(proc)
                        rc = "timeout"
                        break
                    try:
                        rc = proc.wait(timeout=min(REFRESH_S, remaining))
                    except subprocess.TimeoutExpired:
                        self.write()  # a kill from outside keeps what this step wrote so far
            except BaseException:  # this script is being stopped: so is the step, whole
                _kill_group(proc)
                self._record(name, "stopped", t0, log)
                raise
        self._record(name, rc, t0, log)
        seconds = self.steps[-1]["seconds"]
        self.say(f"{name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {seconds}s, log {log}")
        self.write()
        return rc == 0

    def _record(self, name: str, rc: int | str, t0: float, log: Path) -> None:
        seconds = round(time.monotonic() - t0, 1)
        self.steps.append({"step": name, "rc": rc, "seconds": seconds, "log": f"logs/{log.name}"})
        self.running = None

    def skip(self, name: str, why: str) -> None:
        self.steps.append({"step": name, "rc": None, "skipped": why})
        self.say(f"{name}: skipped ({why})")
        self.write()


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's process group (the bench and its worker alike), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, 0)  # the leader is gone; are its children?
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def gpu_name() -> tuple[str | None, str]:
    """(the first CUDA GPU's name as PyTorch sees it, or None; why not)."""
    try:
        import torch
    except ImportError:
        return None, f"this Python ({sys.executable}) has no PyTorch"
    if not torch.cuda.is_available():
        return None, "PyTorch sees no CUDA GPU"
    return torch.cuda.get_device_name(0), ""


def check_packages(check: Check) -> None:
    check.packages = packages()
    for module, p in check.packages.items():
        if p["status"] == "missing":
            check.say(f"package {module} is missing: {p['for']} cannot run")
        elif p["status"] == "too old":
            check.say(f"package {module} {p['version']} is older than {p['floor']}: {p['for']}")
    check.write()


def install(check: Check, work: Path) -> dict:
    """styleship into work/site beside links to the checkout's assets/ and benchmarks/ (the
    package looks for both beside itself); a plain copy where pip cannot install it."""
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
    if not check.run("install", args, 120, work, env):
        check.say("install: pip could not install it; running from a copy of the package")
        shutil.rmtree(site, ignore_errors=True)
        shutil.copytree(src / "styleship", site / "styleship")
    for name in ("assets", "benchmarks"):  # where the checkout has them: beside the package
        (site / name).symlink_to(ROOT / name, target_is_directory=True)
    return env


def environment(check: Check, work: Path, env: dict) -> None:
    """environment.json: the benchmark's own record (from the install) and nvidia-smi."""
    code = (
        "import json; from styleship.bench.env import environment; "
        "print(json.dumps(environment(), indent=2))"
    )
    facts: dict = {"python": sys.executable, "python_version": platform.python_version()}
    try:
        record = subprocess.run(
            [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, timeout=60
        )
        facts["styleship"] = json.loads(record.stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        facts["styleship_error"] = str(exc)[-500:]
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        facts["nvidia_smi"] = smi.stdout.splitlines()
    (check.out / "environment.json").write_text(json.dumps(facts, indent=2) + "\n")


def dry_run(check: Check, work: Path) -> int:
    """Everything the real run needs, resolved without a GPU or a long step."""
    lacking = check.can("dry")
    if lacking:
        check.say(f"dry run: cannot resolve the suites without {', '.join(lacking)}")
        return 1
    env = install(check, work)
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


def real_run(check: Check, work: Path, stand_in: bool) -> int:
    env = install(check, work)
    environment(check, work, env)
    models = work / "bench-models"  # the full-width model's checkpoint, shared by both suites

    def bench(suite: str, limit: float) -> None:
        # The stand-in: the same step on the CPU, with more cases than a short budget holds.
        target = str(ROOT / "benchmarks" / "stand-in" / f"{suite}.toml") if stand_in else suite
        args = [sys.executable, "-c", BENCH, target, str(check.out / f"bench-{suite}")]
        check.run(f"bench-{suite}", [*args, str(models)], limit, work, env)

    lacking = check.can("bench")
    if lacking:
        check.skip("bench-gpu-quick", f"needs {', '.join(lacking)}")
    else:
        tests_ok = not check.can("pytest")
        bench("gpu-quick", check.left() - (min(PYTEST_S, check.left() / 4) if tests_ok else 0))
    lacking = check.can("pytest")
    if lacking or check.left() < 10:
        check.skip("pytest-gpu", f"needs {', '.join(lacking)}" if lacking else "no time left")
    else:
        tests = [sys.executable, "-m", "pytest", str(ROOT / "tests"), "-m", "gpu", "-q", "-ra"]
        check.run("pytest-gpu", [*tests, "-p", "no:cacheprovider"], PYTEST_S, work, env)
    lacking = check.can("compile")
    if stand_in:
        check.skip("bench-gpu-quick-compile", "stand-in: torch.compile has no CPU stand-in here")
    elif lacking or check.left() < MIN_COMPILE_S:
        why = f"needs {', '.join(lacking)}" if lacking else f"{check.left():.0f}s left"
        check.skip("bench-gpu-quick-compile", why)
    else:
        bench("gpu-quick-compile", check.left())
    return 1 if any(s.get("rc") not in (0, None) for s in check.steps) else 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check" / stamp)
    parser.add_argument(
        "--copy-to",
        type=Path,
        help="also keep check.json, the archive and "
        "results-<suite>.json here, current after every step ($OUT)",
    )
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="resolve everything, run nothing")
    mode.add_argument("--stand-in", action="store_true", help="the real steps, CPU suites")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    name = "a CPU stand-in" if args.stand_in else None
    if not (args.dry_run or args.stand_in):
        name, why = gpu_name()
        if name is None:
            print(f"gpu-check: no CUDA GPU here ({why}); run it on a GPU machine", file=sys.stderr)
            return 1
    out = args.out.resolve()
    kind = "dry run" if args.dry_run else "stand-in" if args.stand_in else "gpu"
    copy_to = args.copy_to.resolve() if args.copy_to else None
    check = Check(out, args.budget, copy_to, kind)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs
    check.say(f"gpu-check {kind}{f' on {name}' if name else ''}, writing {out}")
    # Under the checkout's build/, so the install's `git` lookups still find the repository.
    (ROOT / "build").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-install-", dir=ROOT / "build"))
    rc = 1
    try:
        check_packages(check)
        rc = dry_run(check, work) if args.dry_run else real_run(check, work, args.stand_in)
        check.finished, check.rc = True, rc
    finally:  # stopped or not, check.json and the copies say where it got to
        shutil.rmtree(work, ignore_errors=True)
        check.write()
    check.say(f"gpu-check {'passed' if rc == 0 else 'FAILED'}: {out / 'check.json'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
