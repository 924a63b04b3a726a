"""The VQ-VAE warm-started from a pretrained teacher (`topology = "magenta"`).

A student that starts from random weights has to learn in a CPU budget what the
teacher learnt from a large corpus; DistilBERT (Sanh et al. 2019) instead starts
its student from the teacher's own layers. Here every layer of the VQ-VAE is
Magenta's (models/magenta_net.py) except the codebook:

content ─Contract─▶ 32-d features at 1/4 ─VQ (K codes, euclidean)─▶ codes ──┐
style ───StylePredictor─▶ 100-d style code ──────────────────────────────────┤ conditional
                                                                             ▼ instance norms
                                                            StyleDecoder ─▶ image in [0, 1]

- The contract layers have no normalisation in the release, so the content codes
  never depend on the style (the issue's "neutral code" holds by construction).
- The codebook is k-means on the teacher's contract features of the training
  images (`warm_start`): the discrete bottleneck is the only new part, and
  decoding the quantised features already keeps the teacher's style (measured:
  docs/training.md).
- Strength is Magenta's: code = α·P(style) + (1 − α)·P(content); the stylizer
  graph takes the mixed code and the runtime mixes it (strength rule "code").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from styleship.errors import InputError
from styleship.models.magenta_net import (
    CODE_DIM,
    CONTRACT,
    Contract,
    StyleDecoder,
    StylePredictor,
    load_magenta,
)
from styleship.models.quantizer import VectorQuantizer

# Training images are read at this longest side for the codebook's k-means.
KMEANS_SIDE = 320


class WarmVQVAE(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        if config.code_dim != CONTRACT[-1] or config.style_dim != CODE_DIM:
            raise InputError(
                f"the magenta topology has code_dim {CONTRACT[-1]} and style_dim {CODE_DIM} "
                f"(got {config.code_dim} and {config.style_dim})"
            )
        self.config = config
        self.encoder = Contract()
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.code_dim, config.ema_decay, config.commitment,
            euclidean=True,
        )  # fmt: skip
        self.style_head = StylePredictor()
        self.decoder = StyleDecoder()

    def encode_style(self, style: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"style_vector": self.style_head(style)}

    def content_codes(self, content: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H/4, W/4)."""
        return self.quantizer.quantize(self.encoder(content))[1]

    def stylize(self, content: torch.Tensor, style_vector: torch.Tensor) -> torch.Tensor:
        codes, _ = self.quantizer.quantize(self.encoder(content))
        return self.decoder(codes, style_vector)

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor):
        """The fused graph, with Magenta's strength: α·P(style) + (1 − α)·P(content)."""
        own, toward = self.style_head(content), self.style_head(style)
        return self.stylize(content, own + alpha.reshape(-1, 1) * (toward - own))


class StylizerGraph(nn.Module):
    """content + (mixed) style code -> image; no α input: the runtime mixes codes."""

    def __init__(self, model: WarmVQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, content: torch.Tensor, style_vector: torch.Tensor) -> torch.Tensor:
        return self.model.stylize(content, style_vector)


@torch.no_grad()
def contract_features(contract: Contract, images: list[Path]) -> torch.Tensor:
    """Every position's 32-d contract feature of each image (longest side KMEANS_SIDE)."""
    from styleship.runtime import image as im

    rows = []
    for path in images:
        rgb = im.resize_max_side(im.read_image(path).rgb, KMEANS_SIDE)
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))
        f = contract(x)
        rows.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
    return torch.cat(rows)


def warm_start(config, teacher: Path, images: list[Path], seed: int) -> tuple[WarmVQVAE, dict]:
    """A WarmVQVAE with the teacher's layers and a codebook k-means'd on its features."""
    contract, decoder, predictor = load_magenta(teacher)
    model = WarmVQVAE(config)
    model.encoder.load_state_dict(contract.state_dict())
    model.decoder.load_state_dict(decoder.state_dict())
    model.style_head.load_state_dict(predictor.state_dict())
    feats = contract_features(model.encoder, images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.quantizer.kmeans_init(feats)
    provenance = {
        "untrained": False,
        "note": (
            "warm start: contract layers, residual and expand layers with their conditional "
            f"norms, and the MobileNet-v2 style predictor inherited from the teacher "
            f"{teacher.name}; codebook k-means on its contract features of "
            f"{len(images)} training images"
        ),
        "teacher": str(teacher),
        "kmeans_positions": int(feats.shape[0]),
        "seed": seed,
    }
    return model.eval(), provenance
