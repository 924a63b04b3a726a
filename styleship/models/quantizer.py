"""Vector quantiser with an l2-normalised codebook, EMA updates, k-means
initialisation and dead-code restarts (van den Oord et al. 2017, "Neural
Discrete Representation Learning"; normalised low-dimensional codes as in
ViT-VQGAN, Yu et al. 2022; EMA and restarts as in EnCodec, Défossez et al. 2022).

Inference is export-friendly: with normalised inputs and codes, the nearest
code is the ArgMax of one 1×1 Conv's channels, and the lookup another Conv; the training-only
updates sit behind `self.training`. The quantiser always computes in fp32.

`euclidean=True` quantises raw vectors instead (a warm start's inherited
features keep their magnitude): the nearest code maximises z·e − ½‖e‖², the
same Conv with a bias; codes are plain means, not renormalised.
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
        euclidean: bool = False,
    ) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.beta = decay, beta
        self.dead_threshold, self.kmeans_iters = dead_threshold, kmeans_iters
        self.euclidean = euclidean
        self.register_buffer("codebook", F.normalize(torch.randn(num_codes, dim), dim=1))
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("initialised", torch.tensor(False))
        # Assignments seen in training, so a checkpoint can report codebook usage.
        self.register_buffer("usage", torch.zeros(num_codes))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of `flat` (N, D).

        For unit vectors ‖z − e‖² = 2 − 2 z·e, so the nearest code maximises z·e;
        for raw ones ‖z − e‖² = ‖z‖² − 2(z·e − ½‖e‖²), and ‖z‖² ranks nothing.
        """
        return torch.argmax(self._score(flat, self.codebook), dim=1)

    def _offset(self, codes: torch.Tensor) -> torch.Tensor | None:
        """What each code's score adds to z·e: −½‖e‖² for raw vectors, nothing for unit ones."""
        return -0.5 * codes.square().sum(dim=1) if self.euclidean else None

    def _score(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        offset = self._offset(codes)
        score = flat @ codes.t()
        return score if offset is None else score + offset

    def _place(self, vectors: torch.Tensor) -> torch.Tensor:
        """Vectors as codes: unit length, or as they are for the euclidean metric."""
        return vectors if self.euclidean else F.normalize(vectors, dim=1)

    def _centre(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The code for vectors summing to `sums`, `counts` of them: their mean, or its
        direction (the normalised sum) for unit codes."""
        if not self.euclidean:
            return self._place(sums)
        return sums / counts.to(sums.dtype).clamp(min=1e-6)[:, None]

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (B, D, H, W), indices (B, H, W)), in the layout engines tune for.

        A 1×1 Conv scores every code (the codebook is its weight); the indices are the
        ArgMax over its K channels. The codes come from a second 1×1 Conv over the
        one-hot of the best score (ties share), not from a Gather of the indices: the
        Gather's channels-last rows cost OpenVINO the blocked layout of the whole
        decoder after it (warm VQ-VAE at 512²: 45 ms with the Gather, 28.6 without,
        26 with no quantiser at all; docs/models/vqvae.md). A graph that needs only
        the codes leaves the ArgMax out.
        """
        scores = F.conv2d(z.float(), self.codebook[:, :, None, None], self._offset(self.codebook))
        hit = (scores >= scores.amax(dim=1, keepdim=True)).float()
        share = hit / hit.sum(dim=1, keepdim=True)
        codes = F.conv2d(share, self.codebook.t()[:, :, None, None])
        return codes, scores.argmax(dim=1)

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
            self.kmeans_init(flat)
        idx = self.nearest(flat)
        counts = torch.bincount(idx, minlength=self.num_codes).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.codebook.copy_(self._centre(self.ema_sum, self.ema_count))
        self.usage.add_(counts)
        self._restart_dead(flat)

    def kmeans_init(self, flat: torch.Tensor) -> None:
        """k-means (spherical unless euclidean) on the first batch, or on whatever a warm
        start passes; codes start where the data is."""
        pick = torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)
        centres = self._place(flat[pick] + 1e-3 * torch.randn_like(flat[pick]))
        for _ in range(self.kmeans_iters):
            idx = torch.argmax(self._score(flat, centres), dim=1)
            sums = torch.zeros_like(centres).index_add_(0, idx, flat)
            counts = torch.bincount(idx, minlength=self.num_codes)
            centres = torch.where(counts[:, None] > 0, self._centre(sums, counts), centres)
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
        fresh = self._place(flat[pick])
        self.codebook[dead] = fresh
        self.ema_sum[dead] = fresh * self.dead_threshold
        self.ema_count[dead] = self.dead_threshold
