"""Import the officially released ST-VAE checkpoints (Holmes-Alan/ST-VAE).

`vgg_r41.pth`, `dec_r41.pth` and `matrix_r41_new.pth` are plain state dicts
whose keys already match our module names, so the conversion is a prefix per
file; the architecture (width, z, matrix size) is read off the tensors.
"""

from __future__ import annotations

from pathlib import Path

from styleship._hashing import sha256_file
from styleship.errors import ModelError
from styleship.models.checkpoint import check_state_dict, load_pth
from styleship.models.stvae import STVAE, STVAEConfig

PREFIXES = {"encoder": "encoder.", "decoder": "decoder.", "matrix": "transform."}


def _shape(state: dict, key: str, source: Path) -> tuple[int, ...]:
    if key not in state:
        raise ModelError(f"{source}: missing tensor {key!r}; is this the right file?")
    return tuple(state[key].shape)


def import_official(encoder: Path, decoder: Path, matrix: Path) -> tuple[STVAE, dict]:
    """Load the three official files into an STVAE; returns (model, weights provenance)."""
    files = {"encoder": Path(encoder), "decoder": Path(decoder), "matrix": Path(matrix)}
    states = {part: load_pth(path) for part, path in files.items()}
    width = _shape(states["encoder"], "conv10.weight", files["encoder"])[0] / 512
    z_dim = _shape(states["matrix"], "VAE.bn.weight", files["matrix"])[0]
    matrix_size = _shape(states["matrix"], "compress.weight", files["matrix"])[0]
    model = STVAE(STVAEConfig(width=width, z_dim=z_dim, matrix_size=matrix_size))
    tensors = {
        PREFIXES[part] + key: value
        for part, state in states.items()
        for key, value in state.items()
    }
    check_state_dict(
        model, tensors, "official ST-VAE checkpoint", optional=("num_batches_tracked",)
    )
    model.load_state_dict(tensors, strict=False)
    weights = {
        "source": "stvae-official",
        "files": {p: {"file": f.name, "sha256": sha256_file(f)} for p, f in files.items()},
    }
    return model.eval(), weights
