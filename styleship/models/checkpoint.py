"""Checkpoints: `<name>.safetensors` (tensors) + `<name>.json` (config, provenance).

Nothing here unpickles: our own files are safetensors, and foreign `.pth`
files load only through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from torch import nn

from styleship import _atomic
from styleship._jsonfile import read_versioned
from styleship.errors import InputError, ModelError
from styleship.models.registry import get_family

FORMAT = "styleship-checkpoint"
FORMAT_VERSION = 1


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """`name`, `name.json` or `name.safetensors` -> (tensors, metadata) paths."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def load_pth(path: Path) -> dict[str, torch.Tensor]:
    """Load a foreign state dict with `weights_only=True`; refuse anything else."""
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe pickle"
        raise ModelError(f"{path}: refused, it holds more than tensors ({first})") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... for non-checkpoints
        raise ModelError(f"{path}: not a PyTorch state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a plain state dict of tensors")
    return state


def check_state_dict(
    model: nn.Module, tensors: dict[str, torch.Tensor], source: str, optional: tuple[str, ...] = ()
) -> None:
    """Raise ModelError naming the first missing, unexpected or mis-shaped tensor.

    Keys ending in one of `optional` may be absent (e.g. BatchNorm's counters).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors and not k.endswith(optional)]
    if missing:
        raise ModelError(f"{source}: missing tensor {missing[0]!r} ({len(missing)} missing)")
    unexpected = [k for k in tensors if k not in expected]
    if unexpected:
        raise ModelError(f"{source}: unexpected tensor {unexpected[0]!r}")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelError(
                f"{source}: tensor {key!r} has shape {list(value.shape)}, "
                f"the config expects {list(expected[key].shape)}"
            )


def save_checkpoint(
    path: str | Path, family: str, model: nn.Module, weights: dict, training: dict | None = None
) -> Path:
    """Write both files atomically; returns the .safetensors path."""
    from safetensors.torch import save

    tensors_path, meta_path = checkpoint_paths(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family,
        "config": model.config.to_dict(),
        "weights": weights,
        "training": training or {},
    }
    _atomic.write_bytes(tensors_path, save(state))
    _atomic.write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return tensors_path


def read_meta(path: str | Path) -> dict:
    tensors_path, meta_path = checkpoint_paths(path)
    for p in (meta_path, tensors_path):
        if not p.is_file():
            raise InputError(f"checkpoint file not found: {p}")
    return read_versioned(meta_path, FORMAT, FORMAT_VERSION, "checkpoint")


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Build the model its JSON describes and load its tensors, checked key by key."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_meta(path)
    tensors_path, _ = checkpoint_paths(path)
    family = get_family(meta["family"])
    model = family.build(family.config_from_dict(meta["config"]))
    try:
        tensors = load_file(tensors_path)
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{tensors_path}: unreadable safetensors file ({exc})") from None
    check_state_dict(model, tensors, str(tensors_path))
    model.load_state_dict(tensors)
    return model.eval(), meta
