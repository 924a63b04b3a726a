"""`styleship doctor`: what this machine can run, and what is misconfigured."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess

from styleship import __version__
from styleship.runtime.backends import available_backends

PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "onnxscript",
    "openvino",
    "torch",
    "safetensors",
    "tensorrt",
    "cuda-python",
    "nvidia-pytriton",
    "tritonclient",
)


def package_version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpus() -> list[str]:
    """One "name, compute capability, driver" line per NVIDIA GPU; empty without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def engine_choices(bundles: list[str]) -> dict:
    """What `stylize` and `serve` run each bundle on here (measured now if never before),
    and every choice cached on this machine."""
    from styleship.runtime.bundle import Bundle
    from styleship.runtime.choice import cached_choices, choose

    chosen = {}
    for path in bundles:
        choice = choose(Bundle.load(path))
        chosen[str(path)] = choice.brief() | {
            "measured": choice.measured,
            "skipped": choice.skipped,
        }
    return {"chosen": chosen, "cached": len(cached_choices())}


def diagnose() -> dict:
    """A JSON-able report; `problems` lists what will break and how to fix it."""
    versions = {pkg: package_version(pkg) for pkg in PACKAGES}
    problems = []
    if versions["onnxruntime"] and versions["onnxruntime-gpu"]:
        problems.append(
            "onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files: "
            "pip uninstall -y onnxruntime onnxruntime-gpu, then install one of them"
        )
    if versions["opencv-python"] and versions["opencv-python-headless"]:
        problems.append(
            "opencv-python and opencv-python-headless are both installed: keep the headless one"
        )
    if versions["nvidia-pytriton"] and int((versions["numpy"] or "0").split(".")[0]) >= 2:
        problems.append(
            f"nvidia-pytriton cannot serve with NumPy {versions['numpy']} (its stub sends empty "
            "outputs): pip install 'numpy<2' 'opencv-python-headless<4.12'"
        )
    backends = available_backends()
    if all(reason for reason in backends.values()):
        problems.append("no inference backend is usable: pip install 'styleship[cpu]'")
    return {
        "styleship": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "backends": {name: reason or "available" for name, reason in backends.items()},
        "gpus": gpus(),
        "tensorrt": versions["tensorrt"] or "not installed (pip install 'styleship[gpu]')",
        "serve": versions["nvidia-pytriton"] or "not installed (pip install 'styleship[serve]')",
        "problems": problems,
    }
