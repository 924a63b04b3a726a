"""Vector quantiser with an l2-normalised codebook, EMA updates, k-means
initialisation and dead-code restarts (van den Oord et al. 2017, "Neural
Discrete Representation Learning"; normalised low-dimensional codes as in
ViT-VQGAN, Yu et al. 2022; EMA and restarts as in EnCodec, Défossez et al. 2022).

Inference is export-friendly: with normalised inputs and codes, the nearest
code is the ArgMax of one MatMul, and the lookup is a Gather; the training-only
updates sit behind `self.training`. The quantiser always computes in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, H, W), straight-through in training
    indices: torch.Tensor  # (B, H, W) int64
    commitment: torch.Tensor  # β·‖z − sg(q)‖², a scalar
    perplexity: torch.Tensor  # exp(entropy of this batch's code histogram)
    codes_in_use: torch.Tensor  # distinct codes assigned in this batch


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int = 1024,
        dim: int = 64,
        decay: float = 0.99,
        beta: float = 0.25,
        dead_threshold: float = 2.0,
        kmeans_iters: int = 10,
    ) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.beta = decay, beta
        self.dead_threshold, self.kmeans_iters = dead_threshold, kmeans_iters
        self.register_buffer("codebook", F.normalize(torch.randn(num_codes, dim), dim=1))
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("initialised", torch.tensor(False))
        # Assignments seen in training, so a checkpoint can report codebook usage.
        self.register_buffer("usage", torch.zeros(num_codes))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of `flat` (N, D), both l2-normalised.

        For unit vectors ‖z − e‖² = 2 − 2 z·e, so the nearest code maximises z·e.
        """
        return torch.argmax(flat @ self.codebook.t(), dim=1)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (B, D, H, W), indices (B, H, W)) for normalised z: MatMul, ArgMax, Gather only."""
        b, d, h, w = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.nearest(flat)
        q = F.embedding(idx, self.codebook).reshape(b, h, w, d).permute(0, 3, 1, 2)
        return q, idx.reshape(b, h, w)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Training path: EMA update, then quantise with statistics and a straight-through copy."""
        with torch.autocast(z.device.type, enabled=False):  # fp32 even under mixed precision
            return self._forward_fp32(z.float())

    def _forward_fp32(self, z: torch.Tensor) -> QuantizerOutput:
        if self.training:
            self._update(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
        q, idx = self.quantize(z)
        commitment = self.beta * F.mse_loss(z, q.detach())
        counts = torch.bincount(idx.flatten(), minlength=self.num_codes).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        if self.training:
            q = z + (q - z).detach()  # straight-through: gradients flow to the encoder
        return QuantizerOutput(q, idx, commitment, perplexity, (counts > 0).sum())

    @torch.no_grad()
    def _update(self, flat: torch.Tensor) -> None:
        flat = flat.detach()
        if not bool(self.initialised):
            self._kmeans_init(flat)
        idx = self.nearest(flat)
        counts = torch.bincount(idx, minlength=self.num_codes).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.codebook.copy_(F.normalize(self.ema_sum, dim=1))
        self.usage.add_(counts)
        self._restart_dead(flat)

    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """Spherical k-means on the first batch; codes start where the data is."""
        pick = torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)
        centres = F.normalize(flat[pick] + 1e-3 * torch.randn_like(flat[pick]), dim=1)
        for _ in range(self.kmeans_iters):
            idx = torch.argmax(flat @ centres.t(), dim=1)
            sums = torch.zeros_like(centres).index_add_(0, idx, flat)
            counts = torch.bincount(idx, minlength=self.num_codes)
            centres = torch.where(counts[:, None] > 0, F.normalize(sums, dim=1), centres)
        self.codebook.copy_(centres)
        # EMA state consistent with the new codes: one "virtual" assignment each
        # at the dead threshold, so nothing is restarted on the first step.
        self.ema_count.fill_(self.dead_threshold)
        self.ema_sum.copy_(centres * self.dead_threshold)
        self.initialised.fill_(True)

    def _restart_dead(self, flat: torch.Tensor) -> None:
        """Move codes whose EMA count fell below the threshold onto random batch vectors.

        Runs after the EMA update and resets the EMA state of the moved codes,
        so this step's update cannot overwrite the restart.
        """
        dead = self.ema_count < self.dead_threshold
        n = int(dead.sum())
        if n == 0:
            return
        pick = torch.randint(0, flat.shape[0], (n,), device=flat.device)
        fresh = F.normalize(flat[pick], dim=1)
        self.codebook[dead] = fresh
        self.ema_sum[dead] = fresh * self.dead_threshold
        self.ema_count[dead] = self.dead_threshold
