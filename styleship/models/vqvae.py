"""VQ-VAE style transfer: discrete content codes, a continuous style vector, a
FiLM-conditioned decoder (design: docs/models/vqvae.md).

content image ─encoder─▶ 1×1 → 64-d, l2-norm ─VQ (K codes)─▶ codes ─┐
style image ───encoder─▶ per-stage channel mean/std ─MLP─▶ s (256) ─┤ FiLM
                                                                    ▼
                                                    decoder ─▶ image in [0, 1]

Strength: s = α·s_style + (1−α)·s_content, where s_content is the content
image's own style vector, so α = 0 reconstructs the content through the codes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from styleship.errors import InputError
from styleship.models.layers import FiLMResBlock, ResBlock, conv3x3, film, mean_std
from styleship.models.quantizer import VectorQuantizer
from styleship.models.vgg import IMAGENET_MEAN, IMAGENET_STD, scaled

STAGES = (64, 128, 256)  # encoder stage widths at width 1.0; 8× down in total


@dataclass(frozen=True)
class VQVAEConfig:
    width: float = 1.0
    codebook_size: int = 1024
    code_dim: int = 64
    style_dim: int = 256
    decoder_blocks: int = 4
    ema_decay: float = 0.99
    commitment: float = 0.25
    # "styleship": the encoder, style head and decoder below, trained from scratch;
    # "magenta": Magenta's layers warm-started from a teacher bundle (vqvae_warm.py)
    topology: str = "styleship"

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    """Stem + three stride-2 stages with residual blocks; returns each stage's output."""

    def __init__(self, width: float) -> None:
        super().__init__()
        chans = [scaled(c, width) for c in STAGES]
        self.stem = conv3x3(3, chans[0] // 2)
        stages, cin = [], chans[0] // 2
        for c in chans:
            stages.append(nn.Sequential(conv3x3(cin, c, stride=2), ResBlock(c), ResBlock(c)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.channels = chans
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise InputError(
                f"VQ-VAE input is {x.shape[-1]}×{x.shape[-2]}: height and width must be "
                "multiples of 8 (the runtime pads images and crops back)"
            )
        h = torch.relu(self.stem((x - self.mean) / self.std))
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


class StyleHead(nn.Module):
    """Per-stage channel mean and std -> MLP -> style vector."""

    def __init__(self, channels: list[int], style_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * sum(channels), style_dim), nn.ReLU(), nn.Linear(style_dim, style_dim)
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        stats = [t for f in feats for t in mean_std(f)]
        return self.mlp(torch.cat(stats, dim=1))


class Decoder(nn.Module):
    """Codes -> image: FiLM residual blocks, then nearest ×2 upsampling stages with FiLM."""

    def __init__(self, cfg: VQVAEConfig, channels: list[int]) -> None:
        super().__init__()
        top = channels[-1]
        self.post = nn.Conv2d(cfg.code_dim, top, 1)
        self.blocks = nn.ModuleList(FiLMResBlock(top) for _ in range(cfg.decoder_blocks))
        ups, cin = [], top
        for c in (*reversed(channels[:-1]), channels[0] // 2):
            ups.append(conv3x3(cin, c))
            cin = c
        self.ups = nn.ModuleList(ups)
        self.out = conv3x3(cin, 3)
        # One linear maps the style vector to every (γ, β) pair the decoder needs.
        self.sizes = [top] * (4 * cfg.decoder_blocks) + [2 * u.out_channels for u in ups]
        self.film = nn.Linear(cfg.style_dim, sum(self.sizes))

    def forward(self, codes: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        params = list(torch.split(self.film(style), self.sizes, dim=1))
        h = self.post(codes)
        for i, block in enumerate(self.blocks):
            h = block(h, params[4 * i : 4 * i + 4])
        rest = params[4 * len(self.blocks) :]
        for up, gb in zip(self.ups, rest):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            gamma, beta = gb.chunk(2, dim=1)
            h = torch.relu(film(h, gamma, beta))
        return torch.sigmoid(self.out(h))


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.width)
        chans = self.encoder.channels
        self.to_code = nn.Conv2d(chans[-1], config.code_dim, 1)
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.code_dim, config.ema_decay, config.commitment
        )
        self.style_head = StyleHead(chans, config.style_dim)
        self.decoder = Decoder(config, chans)

    def content_latent(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The l2-normalised 64-d content vectors, before quantisation."""
        return F.normalize(self.to_code(feats[-1]), dim=1)

    def encode_style(self, style: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"style_vector": self.style_head(self.encoder(style))}

    def content_codes(self, content: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H/8, W/8): what the content is, in codebook terms."""
        return self.quantizer.quantize(self.content_latent(self.encoder(content)))[1]

    def stylize(self, content: torch.Tensor, style_vector: torch.Tensor, alpha: torch.Tensor):
        feats = self.encoder(content)
        codes, _ = self.quantizer.quantize(self.content_latent(feats))
        a = alpha.reshape(-1, 1)
        s = a * style_vector + (1 - a) * self.style_head(feats)
        return self.decoder(codes, s)

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor):
        """The fused graph: content + style image -> image."""
        return self.stylize(content, self.encode_style(style)["style_vector"], alpha)


class StyleEncoderGraph(nn.Module):
    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        return self.model.encode_style(style)["style_vector"]


class StylizerGraph(nn.Module):
    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, content, style_vector, alpha) -> torch.Tensor:
        return self.model.stylize(content, style_vector, alpha)


class ContentCodesGraph(nn.Module):
    """Content image -> code indices; exported so parity can compare code choices."""

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.model.content_codes(content)
