"""What to train, in which phases, with which losses and settings: one entry per family.

ST-VAE (Liu et al. 2021): phase 1 teaches the decoder to invert the frozen
encoder's relu4_1 features; phase 2 trains the transform (MulLayer with its
VAE) with encoder and decoder frozen, as the paper does. VQ-VAE: phase 1
autoencodes content and style images through the codebook; phase 2 freezes
encoder and codebook and trains the style head and decoder to stylize.

Loss weights here use the mean-normalised losses of `losses.py`; the paper's
ST-VAE weights (0.02 on summed style losses, 1 on a summed KL) do not carry
over as numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from styleship.train import losses as L

Terms = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Preset:
    steps: int
    size: int
    batch: int
    width: float
    lr: float
    loss_width: float  # width of the VGG-19 loss network (1.0 = pretrained-compatible)
    phase1: float  # fraction of steps spent in phase 1
    # VGG layers of the content loss in the stylization phase. relu4_1 alone (the
    # papers' choice) keeps too little of the photo's layout with random VGG features.
    content_layers: tuple[str, ...] = ("relu4_1",)
    # Submodules trained beside each phase's own (e.g. "encoder": the paper keeps the
    # ST-VAE encoder frozen; a trainable one keeps more of the photo, see docs/models/stvae.md).
    also_train: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    # Distillation (train/teacher.py): minted style images added to the style set.
    minted_styles: int = 0
    config: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    checkpoint_every: int = 200
    sample_every: int = 200
    keep: int = 3


@dataclass(frozen=True)
class Phase:
    name: str
    trainable: Callable[[nn.Module], list[nn.Parameter]]
    # (model, loss net, content, style, preset, teacher target or None)
    #   -> (total, logged terms, output image)
    loss: Callable[..., tuple[torch.Tensor, Terms, torch.Tensor]]
    frozen_eval: Callable[[nn.Module], list[nn.Module]] = lambda m: []
    # Submodules trained at SLOW_LR × the phase's rate (inherited layers that should move little).
    slow: tuple[str, ...] = ()
    # The phase's loss takes the teacher's output; with a "hint" weight in the preset, the
    # target is (image, the teacher's own activations) instead (train/teacher.py).
    teacher: bool = False


SLOW_LR = 0.1


def _perceptual(ln, out, ref) -> torch.Tensor:
    fo, fr = ln(out), ln(ref)
    return sum(F.mse_loss(fo[k], fr[k]) for k in L.STYLE_LAYERS)


def teacher_terms(ln, fo: dict, out, target) -> Terms:
    """Distances to the teacher's output: pixels (L1), features (VGG MSE, relu1_1..relu4_1)
    and feature statistics (mean/std and Gram, as the style losses but against the teacher).

    Pixel and feature terms alone let the student settle on one average palette for every
    style (measured: docs/training.md); the statistics terms need no spatial alignment
    and pull each output's palette and texture toward its own teacher output.
    """
    if target is None:
        return {}
    with torch.no_grad():
        ft = ln(target)
    return {
        "teacher_pixel": F.l1_loss(out, target),
        "teacher_feature": sum(F.mse_loss(fo[k], ft[k]) for k in L.STYLE_LAYERS),
        "teacher_style": L.mean_std_loss(fo, ft),
        "teacher_gram": L.gram_loss(fo, ft),
    }


def _weighted(w: dict, terms: Terms) -> torch.Tensor:
    return sum(w[k] * v for k, v in terms.items())


def _stvae_reconstruct(model, ln, c, s, p, target=None):
    w = p.weights
    feat = model.encoder(c)  # tracked only when the preset trains the encoder
    out = model.decoder(feat)
    terms = {"l1": F.l1_loss(out, c), "perceptual": _perceptual(ln, out, c)}
    return terms["l1"] + w["perceptual"] * terms["perceptual"], terms, out.clamp(0, 1)


def _stvae_transform(model, ln, c, s, p, target=None):
    w = p.weights
    image, hints_t = target if isinstance(target, tuple) else (target, None)
    code, kl = model.encode_style_kl(s)
    hints: list[torch.Tensor] | None = [] if hints_t is not None else None
    out = model.stylize(c, **code, alpha=torch.ones(c.shape[0], device=c.device), hints=hints)
    fo, fc, fs = ln(out), ln(c), ln(s)
    terms = {
        "content": L.content_loss(fo, fc, p.content_layers),
        "style": L.mean_std_loss(fo, fs),
        "gram": L.gram_loss(fo, fs),
        "kl": kl / c.shape[0],
        "tv": L.tv_loss(out),
        **teacher_terms(ln, fo, out, image),
    }
    if hints is not None:  # conv15/17/18 against the teacher's residual5, up1, up2
        pairs = zip(model.hint_adapters, hints, (hints_t[-3], hints_t[-2], hints_t[-1]))
        terms["hint"] = sum(F.mse_loss(a(h), t) for a, h, t in pairs) / 3
    return _weighted(w, terms), terms, out


def _vqvae_reconstruct(model, ln, c, s, p, target=None):
    w = p.weights
    x = torch.cat([c, s])
    feats = model.encoder(x)
    q = model.quantizer(model.content_latent(feats))
    out = model.decoder(q.quantized, model.style_head(feats))
    terms = {
        "l1": F.l1_loss(out, x),
        "perceptual": _perceptual(ln, out, x),
        "commitment": q.commitment,
    }
    total = terms["l1"] + w["perceptual"] * terms["perceptual"] + terms["commitment"]
    terms.update(perplexity=q.perplexity.detach(), codes=q.codes_in_use.float())
    return total, terms, out[: c.shape[0]]


def _vqvae_stylize(model, ln, c, s, p, target=None):
    w = p.weights
    with torch.no_grad():
        feats_c = model.encoder(c)
        codes, _ = model.quantizer.quantize(model.content_latent(feats_c))
        feats_s = model.encoder(s)
    out = model.decoder(codes, model.style_head(feats_s))
    same = model.decoder(codes, model.style_head(feats_c))
    fo, fc, fs = ln(out), ln(c), ln(s)
    terms = {
        "content": L.content_loss(fo, fc, p.content_layers),
        "style": L.mean_std_loss(fo, fs),
        "gram": L.gram_loss(fo, fs),
        "identity": F.l1_loss(same, c),
        **teacher_terms(ln, fo, out, target),
    }
    return _weighted(w, terms), terms, out


def _vqvae_warm_distil(model, ln, c, s, p, target=None):
    """Warm-started VQ-VAE: decode the quantised teacher features toward the teacher's output,
    with hints (Romero et al. 2015, FitNets) on every residual block and expand stage. Student
    and teacher share widths, so the hint adapters are the identity."""
    image, hints_t = target
    with torch.no_grad():
        feats = model.encoder(c)
    q = model.quantizer(feats)
    hints: list[torch.Tensor] = []
    out = model.decoder(q.quantized, model.style_head(s), hints)
    terms = {
        **teacher_terms(ln, ln(out), out, image),
        "hint": sum(F.mse_loss(h, t) for h, t in zip(hints, hints_t)) / len(hints),
        "commitment": q.commitment,
    }
    total = _weighted(p.weights, terms)
    terms.update(perplexity=q.perplexity.detach(), codes=q.codes_in_use.float())
    return total, terms, out


def _params(*names: str) -> Callable[[nn.Module], list[nn.Parameter]]:
    """The parameters of the named submodules; a name ending in ? may be absent."""

    def pick(m: nn.Module) -> list[nn.Parameter]:
        mods = [getattr(m, n[:-1], None) if n.endswith("?") else getattr(m, n) for n in names]
        return [p for mod in mods if mod is not None for p in mod.parameters()]

    return pick


PHASES: dict[str, tuple[Phase, Phase]] = {
    "stvae": (
        Phase("reconstruct", _params("decoder"), _stvae_reconstruct),
        Phase("transform", _params("transform", "hint_adapters?"), _stvae_transform, teacher=True),
    ),
    "vqvae": (
        Phase("reconstruct", lambda m: list(m.parameters()), _vqvae_reconstruct),
        Phase(
            "stylize",
            _params("style_head", "decoder"),
            _vqvae_stylize,
            frozen_eval=lambda m: [m.quantizer],
            teacher=True,
        ),
    ),
}

# The warm-started VQ-VAE (models/vqvae_warm.py): phase 1 lets the codebook follow the
# features by EMA while the decoder adapts; phase 2 freezes it. The style predictor moves
# at SLOW_LR; the contract layers stay the teacher's.
WARM_PHASES = (
    Phase("adapt", _params("decoder"), _vqvae_warm_distil, slow=("style_head",), teacher=True),
    Phase(
        "distil",
        _params("decoder"),
        _vqvae_warm_distil,
        frozen_eval=lambda m: [m.quantizer],
        slow=("style_head",),
        teacher=True,
    ),
)


def phases_for(family: str, config) -> tuple[Phase, Phase]:
    """The phases that train `config`'s model: the family's, or the warm start's."""
    return WARM_PHASES if getattr(config, "topology", None) == "magenta" else PHASES[family]


# The official ST-VAE's style loss has a Gram term beside mean/std; the paper presets keep
# one (relative, losses.gram_loss; untried here: no pretrained VGG-19 on these machines).
_STVAE_W = {"perceptual": 1.0, "content": 2.0, "style": 10.0, "gram": 1.0, "kl": 1e-3, "tv": 0.1}
_VQVAE_W = {"perceptual": 1.0, "content": 1.0, "style": 10.0, "gram": 1.0, "identity": 1.0}
# Random-VGG presets: Gram terms logged but off. They were tuned when the Gram term was a
# plain MSE of ≈1e-5, i.e. off; turned on, they cost structure and style gain on held-out
# pairs (probes in docs/training.md).
_NO_GRAM = {"gram": 0.0}
# Random VGG features: a stronger, multi-layer content term keeps the photo's structure.
_STVAE_DEMO_W = {**_STVAE_W, **_NO_GRAM, "content": 4.0}
_VQVAE_DEMO_W = {**_VQVAE_W, **_NO_GRAM}

# The papers' settings: full width, pretrained VGG-19 loss network, 256 px crops.
_PAPER = Preset(
    steps=200_000,
    size=256,
    batch=8,
    width=1.0,
    lr=1e-4,
    loss_width=1.0,
    phase1=0.5,
    checkpoint_every=5000,
    sample_every=1000,
)
# Small enough to train on a 2-core CPU in under half an hour per family.
_DEMO = Preset(steps=3000, size=128, batch=4, width=0.25, lr=5e-4, loss_width=0.5, phase1=0.5)

# Distillation from a pretrained teacher (train/teacher.py): the teacher's output is the
# main target; the family's own terms stay, lighter, as a prior. Feature terms use
# whatever VGG-19 the run has (random:SEED here), which is what the recipe records.
_DISTILL_TERMS = {
    "teacher_pixel": 10.0,
    "teacher_feature": 1.0,
    "teacher_style": 10.0,
    "teacher_gram": 0.0,  # logged; off as the family's own Gram term is (above)
}
_STVAE_DISTILL_W = {**_STVAE_W, **_NO_GRAM, "content": 1.0, "style": 1.0, **_DISTILL_TERMS}
_VQVAE_DISTILL_W = {**_VQVAE_W, **_NO_GRAM, "content": 0.5, "style": 1.0, **_DISTILL_TERMS}
_WARM_W = {**_DISTILL_TERMS, "hint": 1.0, "commitment": 0.0}
# Sized to about 30 minutes per family on a 2-core CPU (measured: docs/training.md).
_DISTILL_DEMO = replace(_DEMO, size=160, phase1=0.3, minted_styles=400)
# GPU-sized: the papers' crops and widths, teacher targets throughout phase 2.
_DISTILL = replace(_PAPER, steps=100_000, phase1=0.3, minted_styles=2000)

PRESETS: dict[tuple[str, str], Preset] = {
    ("stvae", "paper"): replace(_PAPER, steps=160_000, weights=_STVAE_W),
    ("vqvae", "paper"): replace(_PAPER, lr=2e-4, weights=_VQVAE_W),
    ("stvae", "demo"): replace(
        _DEMO,
        config={"z_dim": 64, "matrix_size": 16},
        weights=_STVAE_DEMO_W,
        content_layers=("relu2_1", "relu3_1", "relu4_1"),
    ),
    ("vqvae", "demo"): replace(
        _DEMO, steps=2000, config={"codebook_size": 256}, weights=_VQVAE_DEMO_W
    ),
    ("stvae", "distill-demo"): replace(
        _DISTILL_DEMO,
        steps=3000,
        config={"z_dim": 64, "matrix_size": 16},
        weights=_STVAE_DISTILL_W,
        content_layers=("relu2_1", "relu3_1", "relu4_1"),
        also_train=(("encoder",), ("encoder", "decoder")),
    ),
    ("vqvae", "distill-demo"): replace(
        _DISTILL_DEMO, steps=2000, config={"codebook_size": 256}, weights=_VQVAE_DISTILL_W
    ),
    ("stvae", "distill"): replace(
        _DISTILL,
        weights=_STVAE_DISTILL_W,
        content_layers=("relu2_1", "relu3_1", "relu4_1"),
        also_train=(("encoder",), ("encoder", "decoder")),
    ),
    ("vqvae", "distill"): replace(_DISTILL, lr=2e-4, weights=_VQVAE_DISTILL_W),
    ("vqvae", "warm-demo"): replace(
        _DISTILL_DEMO,
        steps=1500,
        phase1=0.2,
        lr=2e-4,
        config={"topology": "magenta", "codebook_size": 256, "code_dim": 32, "style_dim": 100},
        weights=_WARM_W,
    ),
}
