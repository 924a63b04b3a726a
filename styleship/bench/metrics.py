"""Quality next to speed: SSIM to the content, VGG content/style losses, PSNR and SSIM vs fp32.

The losses are the Gatys objective's own terms (`models/gatys.py`) under the
suite's named VGG-19, so a feed-forward output and a Gatys result at some
budget are scored by the same numbers (Huang & Belongie 2017 compare methods
this way). With `random:SEED` VGG weights the losses are only a consistency
check, and the report says so.
"""

from __future__ import annotations

import numpy as np

from styleship.compare import psnr


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) over RGB channels of two H×W×3 images in [0, 1]."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            np.clip(image, 0, 1), np.clip(reference, 0, 1), channel_axis=2, data_range=1.0
        )
    )


def gray_ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of the luminance alone: structure kept, whatever the colours (the yardstick's
    content score, bench/yardstick.py)."""
    import cv2
    from skimage.metrics import structural_similarity

    def gray(x: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.clip(x, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY)

    return float(structural_similarity(gray(image), gray(reference), data_range=1.0))


class LossScorer:
    """Content and style loss of images at one size, against fixed content/style targets."""

    def __init__(self, vgg_source: str, device: str = "cpu") -> None:
        from styleship.models.gatys import Gatys

        # Gatys owns the VGG and the objective; the scorer never optimises.
        self._gatys = Gatys(vgg_source=vgg_source, device=device)
        self.provenance = self._gatys.vgg_provenance

    def set_targets(self, content: np.ndarray, style: np.ndarray) -> None:
        from styleship.models.gatys import to_tensor

        dev = self._gatys.device
        self._gatys.loss.set_targets(to_tensor(content, dev), to_tensor(style, dev))

    def score(self, image: np.ndarray) -> dict[str, float]:
        import torch

        from styleship.models.gatys import to_tensor

        with torch.no_grad():
            c, s = self._gatys.loss(to_tensor(np.clip(image, 0, 1), self._gatys.device))
        return {"content_loss": float(c), "style_loss": float(s)}


def quality(
    image: np.ndarray,
    content: np.ndarray,
    scorer: LossScorer | None,
    reference: np.ndarray | None,
) -> dict[str, float | None]:
    """All quality numbers of one output (the scorer holds this size's targets);
    PSNR vs the fp32 reference when there is one."""
    row: dict[str, float | None] = {"ssim_content": ssim(image, content)}
    if scorer is not None:
        row |= scorer.score(image)
    if reference is not None:
        value = psnr(reference, image)
        row["psnr_vs_fp32_db"] = None if np.isinf(value) else value
        row["ssim_vs_fp32"] = ssim(image, reference)
    return row
