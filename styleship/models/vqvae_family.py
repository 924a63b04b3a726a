"""Registers the VQ-VAE family: graphs, I/O, style mixing, codebook summary."""

from __future__ import annotations

import torch

from styleship.errors import InputError
from styleship.models import vqvae_warm
from styleship.models.registry import FamilySpec, GraphDef, register_family
from styleship.models.vqvae import (
    VQVAE,
    ContentCodesGraph,
    StyleEncoderGraph,
    StylizerGraph,
    VQVAEConfig,
)
from styleship.runtime.bundle import TensorSpec

_IMAGE = ("batch", 3, "height", "width")
_STYLE = ("batch", 3, "style_height", "style_width")
TOPOLOGIES = ("styleship", "magenta")


def _graphs(cfg: VQVAEConfig) -> tuple[GraphDef, ...]:
    vector = TensorSpec("style_vector", ("batch", cfg.style_dim), "code")
    content = TensorSpec("content", _IMAGE, "content")
    style = TensorSpec("style", _STYLE, "style")
    alpha = TensorSpec("alpha", ("batch",), "strength")
    image = TensorSpec("image", _IMAGE, "image")
    codes = TensorSpec("codes", ("batch", "code_height", "code_width"), "indices", "int64")
    stylizer = (
        GraphDef("stylizer", vqvae_warm.StylizerGraph, (content, vector), (image,))
        if _warm(cfg)
        else GraphDef("stylizer", StylizerGraph, (content, vector, alpha), (image,))
    )
    return (
        GraphDef("style_encoder", StyleEncoderGraph, (style,), (vector,)),
        stylizer,
        GraphDef("fused", lambda model: model, (content, style, alpha), (image,)),
        GraphDef("content_codes", ContentCodesGraph, (content,), (codes,)),
    )


def _warm(cfg: VQVAEConfig) -> bool:
    if cfg.topology not in TOPOLOGIES:
        raise InputError(f"unknown vqvae topology {cfg.topology!r}; known: {', '.join(TOPOLOGIES)}")
    return cfg.topology == "magenta"


def _build(cfg: VQVAEConfig) -> VQVAE | vqvae_warm.WarmVQVAE:
    return vqvae_warm.WarmVQVAE(cfg) if _warm(cfg) else VQVAE(cfg)


def _declare(cfg: VQVAEConfig) -> dict:
    if not _warm(cfg):
        return {}
    return {
        "strength": {
            "rule": "code",
            "graph": "style_encoder",
            "formula": "code = α·P(style) + (1 − α)·P(content), P the style encoder (Magenta's "
            "strength); the runtime mixes the codes for `stylizer`, `fused` inside the graph",
        },
        "normalisation": {
            "style_size_multiple": 1,
            "style_input": "any size: centre-cropped to a square and resized to 256² inside "
            "the graph (antialiased bilinear)",
        },
    }


def _warm_start(cfg: VQVAEConfig, teacher, images, seed: int):
    if not _warm(cfg):
        return None
    if teacher is None:
        raise InputError("the magenta topology starts from the teacher's layers: pass --teacher")
    return vqvae_warm.warm_start(cfg, teacher, images, seed)


def _create(cfg: VQVAEConfig, vgg_source: str | None, seed: int) -> tuple[VQVAE, dict]:
    """A new VQ-VAE: every part seeded random (its encoder is learned, not VGG)."""
    if vgg_source is not None:
        raise InputError(
            "vqvae learns its own encoder: VGG-19 weights are for training losses only"
        )
    if _warm(cfg):
        raise InputError("the magenta topology starts from a teacher: train it with --teacher")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VQVAE(cfg)
    weights = {"untrained": True, "note": "seeded random initialisation", "seed": seed}
    return model.eval(), weights


def _summary(model: VQVAE) -> dict:
    q = model.quantizer
    trained = bool(q.initialised)
    return {
        "codebook_size": q.num_codes,
        "code_dim": q.dim,
        "codes_used_in_training": int((q.usage > 0).sum()) if trained else None,
    }


SPEC = register_family(
    FamilySpec(
        name="vqvae",
        description="VQ-VAE: discrete content codes, continuous style vector, FiLM decoder",
        config_cls=VQVAEConfig,
        build=_build,
        create=_create,
        graphs=_graphs,
        style_code={"style_vector": "linear"},
        summary=_summary,
        declare=_declare,
        warm_start=_warm_start,
    )
)
