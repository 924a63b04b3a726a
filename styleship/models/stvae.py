"""ST-VAE (Liu, Kalogeiton, Cani, ICIP 2021, arXiv 2110.07375), faithful to the
official forward pass, split into a style encoder and a stylizer.

Parameter names follow the official code (`conv1..conv19`, `snet`, `cnet`,
`VAE`, `compress`, `unzip`) under the prefixes `encoder.`, `decoder.` and
`transform.`, so the released checkpoints import by prefixing keys.

The style code is what the stylizer needs from a style image:
  style_mu     (B, z)      BatchNorm'd latent mean of the VAE
  style_sigma  (B, z)      exp(logvar), the latent spread
  style_matrix (B, m, m)   snet's transform of the style features
The official reparameterisation returns mu + sigma (its random eps is unused),
so inference is deterministic and the graph holds no random op.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from styleship.models.vgg import NormalisedVGG, scaled


@dataclass(frozen=True)
class STVAEConfig:
    """Architecture of one ST-VAE. width=1.0, z_dim=256, matrix_size=32 is the paper's."""

    width: float = 1.0
    z_dim: int = 256
    matrix_size: int = 32
    # Training aid: 1×1 adapters from three decoder stages to a Magenta teacher's
    # activations (feature hints, train/recipes.py); no exported graph uses them.
    hints: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class Decoder(nn.Module):
    """Mirror of the encoder: reflection pad + 3×3 conv, nearest ×2 upsampling."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4 = (scaled(c, width) for c in (64, 128, 256, 512))
        plan = [(c4, c3), (c3, c3), (c3, c3), (c3, c3), (c3, c2), (c2, c2), (c2, c1), (c1, c1)]
        plan.append((c1, 3))
        for i, (cin, cout) in enumerate(plan, start=11):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3))
        self.pad = nn.ReflectionPad2d(1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor, hints: list | None = None) -> torch.Tensor:
        """With `hints`, also appends the outputs of conv15 (1/4 scale), conv17 (1/2) and
        conv18 (full), the stages where a Magenta teacher has activations too."""
        for i in range(11, 20):
            x = getattr(self, f"conv{i}")(self.pad(x))
            if i < 19:
                x = torch.relu(x)
            if hints is not None and i in HINT_CONVS:
                hints.append(x)
            if i in (11, 15, 17):
                x = self.up(x)
        return x


HINT_CONVS = (15, 17, 18)
# The Magenta teacher's widths at those scales (models/magenta_net.py: residual, up1, up2).
HINT_TARGETS = (32, 16, 8)


def hint_adapters(width: float) -> nn.ModuleList:
    """1×1 convolutions from the decoder's hint stages to the teacher's channel counts."""
    c1, c2 = scaled(64, width), scaled(128, width)  # conv15 -> c2, conv17 and conv18 -> c1
    return nn.ModuleList(nn.Conv2d(c, t, 1) for c, t in zip((c2, c1, c1), HINT_TARGETS))


class CNN(nn.Module):
    """Feature -> m×m matrix: three convs (zero padding, as the official code), a Gram, a linear."""

    def __init__(self, channels: int, matrix_size: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels // 4, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(channels // 4, matrix_size, 3, 1, 1),
        )
        self.fc = nn.Linear(matrix_size * matrix_size, matrix_size * matrix_size)
        self.matrix_size = matrix_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.convs(x)
        b, m, h, w = f.shape
        f = f.reshape(b, m, h * w)
        gram = torch.bmm(f, f.transpose(1, 2)) / (h * w)
        return self.fc(gram.reshape(b, m * m)).reshape(b, m, m)


class VAE(nn.Module):
    """Variational module over the style's channel mean (official `VAE`)."""

    def __init__(self, channels: int, z_dim: int) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(channels, 2 * z_dim))
        self.bn = nn.BatchNorm1d(z_dim)
        self.decode = nn.Sequential(
            nn.Linear(z_dim, channels),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Linear(channels, channels),
        )

    def latent(self, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu, sigma, KL) for a (B, C) channel mean; KL uses the pre-BN mu, as officially."""
        mu_raw, logvar = self.encode(mean).chunk(2, dim=1)
        sigma = torch.exp(logvar)
        kl = torch.sum(0.5 * (mu_raw.pow(2) + sigma.pow(2) - 1) - logvar)
        return self.bn(mu_raw), sigma, kl

    def reconstruct(self, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.decode(mu + sigma)


class MulLayer(nn.Module):
    """The VAE-based linear transformation (official `MulLayer`)."""

    def __init__(self, channels: int, z_dim: int, matrix_size: int) -> None:
        super().__init__()
        self.snet = CNN(channels, matrix_size)
        self.cnet = CNN(channels, matrix_size)
        self.VAE = VAE(channels, z_dim)
        self.compress = nn.Conv2d(channels, matrix_size, 1)
        self.unzip = nn.Conv2d(matrix_size, channels, 1)


class STVAE(nn.Module):
    """Encoder (to relu4_1) + MulLayer + decoder, with the graph split the runtime uses."""

    def __init__(self, config: STVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = NormalisedVGG(config.width)
        channels = self.encoder.out_channels
        self.transform = MulLayer(channels, config.z_dim, config.matrix_size)
        self.decoder = Decoder(config.width)
        if config.hints:
            self.hint_adapters = hint_adapters(config.width)

    def encode_style(self, style: torch.Tensor) -> dict[str, torch.Tensor]:
        """Style image -> style code (see the module docstring)."""
        return self.encode_style_kl(style)[0]

    def encode_style_kl(self, style: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The style code and the VAE's KL term (summed, as the official code), for training."""
        s_feat = self.encoder(style)
        vae = self.transform.VAE
        mu, sigma, kl = vae.latent(s_feat.mean(dim=(2, 3)))
        s_mean = vae.reconstruct(mu, sigma)[:, :, None, None]
        # The official code subtracts the VAE's reconstruction, not the true mean.
        matrix = self.transform.snet(s_feat - s_mean)
        return {"style_mu": mu, "style_sigma": sigma, "style_matrix": matrix}, kl

    def stylize(
        self,
        content: torch.Tensor,
        style_mu: torch.Tensor,
        style_sigma: torch.Tensor,
        style_matrix: torch.Tensor,
        alpha: torch.Tensor,
        hints: list | None = None,
    ) -> torch.Tensor:
        """Content image + style code + strength α (B,) -> image in [0, 1].

        α blends the transformed features with the content's own relu4_1
        features before decoding: 0 reconstructs the content, 1 is full style.
        """
        t = self.transform
        c_feat = self.encoder(content)
        b, _c, h, w = c_feat.shape
        c_centred = c_feat - c_feat.mean(dim=(2, 3), keepdim=True)
        s_mean = t.VAE.reconstruct(style_mu, style_sigma)[:, :, None, None]
        compressed = t.compress(c_centred).reshape(b, -1, h * w)
        trans = torch.bmm(style_matrix, t.cnet(c_centred))
        feat = torch.bmm(trans, compressed).reshape(b, -1, h, w)
        styled = t.unzip(feat) + s_mean
        a = alpha.reshape(b, 1, 1, 1)
        return self.decoder(a * styled + (1 - a) * c_feat, hints).clamp(0.0, 1.0)

    def forward(
        self, content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """The fused graph: content + style image -> image."""
        return self.stylize(content, **self.encode_style(style), alpha=alpha)


class StyleEncoderGraph(nn.Module):
    """Export wrapper: tuple outputs in the manifest's order."""

    def __init__(self, model: STVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, style: torch.Tensor) -> tuple[torch.Tensor, ...]:
        code = self.model.encode_style(style)
        return code["style_mu"], code["style_sigma"], code["style_matrix"]


class StylizerGraph(nn.Module):
    def __init__(self, model: STVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, content, style_mu, style_sigma, style_matrix, alpha) -> torch.Tensor:
        return self.model.stylize(content, style_mu, style_sigma, style_matrix, alpha)
