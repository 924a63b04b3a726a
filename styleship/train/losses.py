"""Losses on a frozen VGG-19 loss network (models/vgg.py), and the adversarial pieces.

Normalisation (all means, so weights do not depend on image or batch size):
content = MSE of relu4_1; mean/std style = Σ_layers MSE(μ) + MSE(σ) over
relu1_1..relu4_1 (Huang & Belongie 2017, AdaIN); Gram style = Σ_layers
‖G(out) − G(style)‖²/‖G(style)‖² with G = FFᵀ/(C·H·W) (Gatys et al. 2016;
relative, so that it does not vanish with random features); total variation = mean
absolute difference of neighbours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from styleship.models.layers import gram, mean_std
from styleship.models.vgg import VGG19Features, resolve_vgg19

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"


class LossNetwork(nn.Module):
    """Frozen VGG-19 features; `provenance` says which weights (recorded in checkpoints)."""

    def __init__(self, source: str | None, width: float = 1.0) -> None:
        super().__init__()
        weights, self.provenance = resolve_vgg19(source, width)
        self.vgg = VGG19Features(width)
        self.vgg.load_state_dict(weights)
        self.width = width
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> LossNetwork:
        return super().train(False)  # always eval: no state to update

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.vgg(x, STYLE_LAYERS)


def content_loss(out: dict, ref: dict, layers: tuple[str, ...] = (CONTENT_LAYER,)) -> torch.Tensor:
    return sum(F.mse_loss(out[k], ref[k]) for k in layers)


def mean_std_loss(out: dict, style: dict) -> torch.Tensor:
    total = 0.0
    for layer in STYLE_LAYERS:
        (mo, so), (ms, ss) = mean_std(out[layer]), mean_std(style[layer])
        total = total + F.mse_loss(mo, ms) + F.mse_loss(so, ss)
    return total


def gram_loss(out: dict, style: dict) -> torch.Tensor:
    """Σ_layers ‖G(out) − G(style)‖² / ‖G(style)‖², per image, then the batch mean.

    Relative, because the plain MSE of Gram entries is tiny with seeded random
    features (≈1e-5 at relu1_1..relu4_1 of a half-width random VGG-19): at any
    sensible weight it added nothing, and texture, which the pretrained
    yardstick weighs heavily, was never trained (docs/training.md).
    """
    total = 0.0
    for layer in STYLE_LAYERS:
        go, gs = gram(out[layer]), gram(style[layer])
        num = (go - gs).pow(2).sum(dim=(1, 2))
        den = gs.pow(2).sum(dim=(1, 2)).clamp_min(torch.finfo(gs.dtype).tiny)  # only 0 guarded
        total = total + (num / den).mean()
    return total


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    return (img[:, :, 1:] - img[:, :, :-1]).abs().mean() + (
        img[..., 1:] - img[..., :-1]
    ).abs().mean()


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): a grid of real/fake logits over overlapping patches."""

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers):
            nxt = channels * min(2**i, 8)
            mods += [nn.Conv2d(c, nxt, 4, 2, 1), nn.GroupNorm(8, nxt), nn.LeakyReLU(0.2)]
            c = nxt
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def adaptive_weight(
    main: torch.Tensor, adv: torch.Tensor, last: torch.Tensor, cap=1e4
) -> torch.Tensor:
    """Balance the adversarial term against the main loss at the decoder's last layer (VQGAN)."""
    g_main = torch.autograd.grad(main, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
    return (g_main.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, cap).detach()
