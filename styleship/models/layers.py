"""Blocks shared by the feed-forward families: residual convs, FiLM, channel statistics.

FiLM takes its (γ, β) as explicit arguments rather than module attributes set
before a call, so tracing and ONNX export see a pure function of the inputs.
"""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-5


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3×3 conv with reflection padding (fewer border artefacts than zeros in stylized output)."""
    return nn.Conv2d(cin, cout, 3, stride, 1, padding_mode="reflect")


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix FFᵀ/(C·H·W) per image (Gatys et al. 2016), size-independent in scale."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over H, W: (B, C) each. The AdaIN statistics."""
    mean = x.mean(dim=(2, 3))
    var = x.var(dim=(2, 3), unbiased=False)
    return mean, torch.sqrt(var + EPS)


def film(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Instance-normalise `x`, then scale by (1 + γ) and shift by β; γ, β are (B, C)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    x = (x - mean) / torch.sqrt(var + EPS)
    return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class ResBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))): keeps resolution and channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class FiLMResBlock(nn.Module):
    """A residual block whose two normalisations are conditioned by FiLM."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.channels = channels

    def forward(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        """`params` = [γ1, β1, γ2, β2], each (B, channels)."""
        h = self.conv1(torch.relu(film(x, params[0], params[1])))
        return x + self.conv2(torch.relu(film(h, params[2], params[3])))
