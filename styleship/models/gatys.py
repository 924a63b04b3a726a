"""The iterative baseline: Gatys, Ecker & Bethge, "Image Style Transfer Using CNNs" (CVPR 2016).

The image itself is optimised so that its VGG-19 features match the content
image at relu4_2 and the Gram matrices of the style image at relu1_1…relu5_1.
Conventions (reference/gatys.md §1, "proposed baseline"): torchvision-named
VGG-19 (`models/vgg.py`, the same weight sources as the feed-forward models),
Gram = FFᵀ/(C·H·W), per-layer MSE, content initialisation.

The cost is made comparable run to run by a fixed budget of closure calls
(one forward and backward pass each): L-BFGS runs with its tolerances
disabled, so it never stops early. Several budgets (100/300/500) are read off
one run: the run to budget B passes through exactly the same states as the
run to any smaller budget, so the time and losses recorded when the call
counter reaches 100 are those of a 100-call run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from styleship.errors import InputError
from styleship.models.layers import gram
from styleship.models.vgg import LAYERS, VGG19Features, resolve_vgg19

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")


@dataclass(frozen=True)
class GatysConfig:
    content_layer: str = "relu4_2"
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    # Per-layer style weights; equal weights when empty (the paper's 1/5 each).
    layer_weights: tuple[float, ...] = ()
    content_weight: float = 1.0  # α
    style_weight: float = 1e6  # β: with Gram/(C·H·W) and MSE the style term is ~1e-6 in scale
    optimizer: str = "lbfgs"
    lr: float = 1.0  # L-BFGS step size; for Adam on [0, 1] pixels use ~0.02
    history: int = 100  # L-BFGS memory (torch default)
    init: str = "content"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise InputError(f"init must be one of {', '.join(INITS)}")
        unknown = [n for n in (self.content_layer, *self.style_layers) if n not in LAYERS]
        if unknown:
            raise InputError(f"unknown VGG layer {unknown[0]!r}; known: {', '.join(LAYERS)}")
        if self.layer_weights and len(self.layer_weights) != len(self.style_layers):
            raise InputError("give one layer weight per style layer")

    def weights(self) -> tuple[float, ...]:
        n = len(self.style_layers)
        return self.layer_weights or (1.0 / n,) * n


class GatysLoss(nn.Module):
    """Content and style losses of images against fixed targets, under a named VGG-19.

    Also the benchmark's quality measure, so feed-forward outputs and Gatys
    results are scored by the same numbers.
    """

    def __init__(self, vgg: VGG19Features, config: GatysConfig) -> None:
        super().__init__()
        self.vgg = vgg.requires_grad_(False).eval()
        self.config = config
        self.layers = tuple(dict.fromkeys((config.content_layer, *config.style_layers)))
        self._content: torch.Tensor | None = None
        self._grams: list[torch.Tensor] = []

    def set_targets(self, content: torch.Tensor, style: torch.Tensor) -> None:
        with torch.no_grad():
            self._content = self.vgg(content, self.layers)[self.config.content_layer]
            feats = self.vgg(style, self.layers)
            self._grams = [gram(feats[name]) for name in self.config.style_layers]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(content loss, style loss), both unweighted by α/β."""
        if self._content is None:
            raise RuntimeError("set_targets() first")
        feats = self.vgg(image, self.layers)
        content = F.mse_loss(
            feats[self.config.content_layer],
            self._content.expand_as(feats[self.config.content_layer]),
        )
        style = sum(
            w * F.mse_loss(gram(feats[name]), g.expand(image.shape[0], -1, -1))
            for name, g, w in zip(self.config.style_layers, self._grams, self.config.weights())
        )
        return content, style


@dataclass
class GatysResult:
    image: np.ndarray  # H×W×3 float32 in [0, 1]
    calls: int
    seconds: float  # optimisation only (targets and set-up excluded)
    setup_seconds: float
    # One row per budget reached: calls, seconds, content/style/total loss.
    checkpoints: list[dict] = field(default_factory=list)
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)  # calls -> image
    config: dict = field(default_factory=dict)


def _rgb(image: torch.Tensor) -> np.ndarray:
    out = image.detach().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(out, dtype=np.float32)


def to_tensor(rgb: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(device)


class Gatys:
    """A loaded baseline: build once (VGG weights), run many times."""

    def __init__(
        self,
        config: GatysConfig | None = None,
        vgg_source: str | None = None,
        device: str = "cpu",
        tf32: bool = False,
    ) -> None:
        self.config = config or GatysConfig()
        weights, self.vgg_provenance = resolve_vgg19(vgg_source)
        vgg = VGG19Features()
        vgg.load_state_dict(weights)
        self.device = device
        self.tf32 = tf32
        self.loss = GatysLoss(vgg.to(device), self.config)

    def run(
        self,
        content: np.ndarray,
        style: np.ndarray,
        budget: int = 300,
        checkpoints: Sequence[int] = (),
        on_call: Callable[[int], None] | None = None,
        snapshots: bool = False,
    ) -> GatysResult:
        """Optimise an image for exactly `budget` closure calls.

        `content` and `style` are H×W×3 float32 RGB in [0, 1]; the result has the
        content's size. Losses and elapsed time are recorded at each checkpoint.
        """
        if budget < 1:
            raise InputError("the budget must be at least one closure call")
        cfg = self.config
        marks = sorted({int(c) for c in checkpoints if 0 < c <= budget} | {budget})
        if self.device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
        t0 = time.perf_counter()
        content_t = to_tensor(content, self.device)
        self.loss.set_targets(content_t, to_tensor(style, self.device))
        if cfg.init == "content":
            start = content_t.clone()
        else:
            gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
            start = torch.rand(content_t.shape, generator=gen, device=self.device)
        image = start.requires_grad_(True)
        if cfg.optimizer == "lbfgs":
            # Negative tolerances can never be met, so the budget alone ends the run.
            opt = torch.optim.LBFGS(
                [image],
                lr=cfg.lr,
                max_iter=budget,
                max_eval=budget,
                tolerance_grad=-1.0,
                tolerance_change=-1.0,
                history_size=cfg.history,
            )
        else:
            opt = torch.optim.Adam([image], lr=cfg.lr)
        self._sync()
        setup = time.perf_counter() - t0
        calls, rows, images = 0, [], {}
        begin = time.perf_counter()

        def closure() -> torch.Tensor:
            nonlocal calls, begin
            opt.zero_grad(set_to_none=True)
            c, s = self.loss(image)
            total = cfg.content_weight * c + cfg.style_weight * s
            total.backward()
            calls += 1
            if calls in marks:
                self._sync()
                rows.append(
                    {
                        "calls": calls,
                        "seconds": time.perf_counter() - begin,
                        "content_loss": float(c.detach()),
                        "style_loss": float(s.detach()),
                        "total_loss": float(total.detach()),
                    }
                )
                if snapshots:
                    paused = time.perf_counter()
                    images[calls] = _rgb(image)
                    # The copy is bookkeeping, not optimisation: leave it out of the clock.
                    begin += time.perf_counter() - paused
            if on_call:
                on_call(calls)
            return total

        while calls < budget:
            opt.step(closure)
            if cfg.optimizer == "lbfgs" and calls < budget:
                # L-BFGS ends a step at max_iter iterations; go on until the budget is spent.
                opt.param_groups[0]["max_iter"] = opt.param_groups[0]["max_eval"] = budget - calls
        self._sync()
        seconds = time.perf_counter() - begin
        return GatysResult(
            image=_rgb(image),
            calls=calls,
            seconds=seconds,
            setup_seconds=setup,
            checkpoints=rows,
            snapshots=images,
            config={
                **asdict(self.config),
                "budget": budget,
                "device": self.device,
                "tf32": self.tf32,
                "vgg": self.vgg_provenance,
            },
        )

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
