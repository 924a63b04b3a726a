"""A pretrained teacher for distillation: any styleship bundle, run through the runtime.

Pretrained VGG-19 weights cannot be fetched on the build machines, so a
student trained on random VGG features learns little of what a painting's
style is. A pretrained style network (Magenta's, imported with
`styleship import magenta`) can show it instead: for every (content crop,
style crop) pair the teacher's output is a target the student is pulled
toward (pixel and feature terms in `train/recipes.py`). The teacher runs
without gradients in fp32 on ONNX Runtime unless told otherwise: never on the
engine a timing picks, because the engines round the teacher's int8 layers
differently (28.5 dB apart for Magenta), and the targets of a seeded run must
not depend on which engine was faster that day.

The teacher also mints extra style images: a training photo stylized with a
random mix of two training paintings' codes, its hue turned and saturation
scaled at random, is a new, plausible painting style with its own palette.
That widens the style set beyond the few paintings we have.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from styleship import _atomic
from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime.stylizer import Job, Stylizer


def recolour(rgb: np.ndarray, hue_degrees: float, saturation: float) -> np.ndarray:
    """Turn the hue and scale the saturation of an RGB picture in [0, 1] (OpenCV HSV)."""
    hsv = cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + hue_degrees) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0.0, 1.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


class Teacher:
    """Targets for batches of (content, style) crops from a bundle, in fp32, no gradients."""

    def __init__(self, bundle: str | Path, backend: str = "ort-cpu") -> None:
        self.stylizer = Stylizer(bundle, backend=backend, precision="fp32", cache_dir=None)
        if not self.stylizer.bundle.has_style_input:
            raise InputError(
                f"teacher {bundle} takes no style image: distillation needs an arbitrary-style "
                "bundle (e.g. styleship import magenta)"
            )
        bundle_obj = self.stylizer.bundle
        self.provenance = {
            "bundle": bundle_obj.name,
            "path": str(bundle),
            "hash": bundle_obj.hash,
            "backend": self.stylizer.backend_name,
            "precision": "fp32",
        }
        self._twin = None

    def code(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The teacher's style code of one H×W×3 picture."""
        return self.stylizer.style_code(im.Image(np.ascontiguousarray(rgb, np.float32)))

    def __call__(self, content: np.ndarray, style: np.ndarray) -> np.ndarray:
        """(B,3,H,W) content and style crops in [0, 1] -> the teacher's (B,3,H,W) outputs."""
        return self._images(content, [self.code(s.transpose(1, 2, 0)) for s in style])

    def targets(self, content: np.ndarray, style: np.ndarray, hints: bool, device):
        """What a distilling phase's loss takes for (B,3,H,W) crops: the outputs as a
        tensor on `device`, or with `hints` (outputs, the teacher's own activations after
        each residual block and expand stage), for feature hints (Romero et al. 2015).

        The activations come from a float torch twin of the bundle's graphs
        (models/magenta_net.py; equal to them within 3e-4), so only a Magenta bundle
        has hints. Each crop's style code is computed once, for both.
        """
        import torch

        codes = [self.code(s.transpose(1, 2, 0)) for s in style]
        images = torch.from_numpy(self._images(content, codes)).to(device)
        if not hints:
            return images
        from styleship.models.magenta_net import load_magenta

        if self._twin is None:
            self._twin = load_magenta(self.provenance["path"])[:2]
        contract, decoder = self._twin
        stacked = torch.from_numpy(np.concatenate([c["style_code"] for c in codes]))
        acts: list = []
        with torch.no_grad():
            decoder(contract(torch.from_numpy(content)), stacked, acts)
        return images, [a.to(device) for a in acts]

    def _images(self, content: np.ndarray, codes: list[dict]) -> np.ndarray:
        jobs = [
            Job(im.Image(np.ascontiguousarray(c.transpose(1, 2, 0))), code)
            for c, code in zip(content, codes)
        ]
        out = self.stylizer.stylize_batch(jobs)
        return np.stack([o.rgb.transpose(2, 0, 1) for o in out]).astype(np.float32)

    def mint_styles(
        self,
        photos: list[Path],
        paintings: list[Path],
        count: int,
        out_dir: Path,
        seed: int,
        side: int = 384,
    ) -> list[Path]:
        """Write `count` new style images: a photo stylized with a random two-painting mix.

        Deterministic for a seed; files that already exist are kept (a resumed run
        reuses them).
        """
        rng = np.random.default_rng([seed, 7])
        _atomic.ensure_dir(out_dir)
        written = []
        for i in range(count):
            photo = photos[rng.integers(len(photos))]
            a, b = rng.choice(len(paintings), 2, replace=len(paintings) < 2)
            weight = float(rng.uniform(0.2, 0.8))
            path = out_dir / f"minted_{i:03d}.jpg"
            written.append(path)
            if path.is_file():
                continue
            code = self.stylizer.mixed_code([paintings[a], paintings[b]], [weight, 1 - weight])
            content = im.read_image(photo)
            content = im.Image(im.resize_max_side(content.rgb, side))
            result = self.stylizer.stylize_batch([Job(content, code)])[0].rgb
            turned = recolour(result, float(rng.uniform(0, 360)), float(rng.uniform(0.7, 1.3)))
            im.write_image(path, im.Image(turned))
        return written

    def close(self) -> None:
        self.stylizer.close()
