"""The environment every result is recorded with: numbers mean nothing without it."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from styleship import __version__
from styleship.doctor import PACKAGES, gpus, package_version
from styleship.runtime.backends.ort import cpu_threads
from styleship.runtime.choice import cpu_model

REPO = Path(__file__).resolve().parents[2]


def cpu_flags() -> list[str]:
    """The ISA extensions that decide CPU speed here (vector width, bf16/int8 units)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return [f for f in wanted if f in flags]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("-dirty" if dirty else "")


def _torch_facts() -> dict:
    if package_version("torch") is None:
        return {}
    import torch

    facts = {"torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        facts |= {
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "gpu": torch.cuda.get_device_name(0),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        }
    return facts


def environment() -> dict:
    """CPU, cores, GPUs and driver, library versions, git commit."""
    import psutil

    return {
        "styleship": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": cpu_threads(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus(),
        "packages": {pkg: package_version(pkg) for pkg in PACKAGES if package_version(pkg)},
        **_torch_facts(),
    }
