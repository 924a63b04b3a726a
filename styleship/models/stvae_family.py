"""Registers the ST-VAE family: its graphs, I/O and style-code mixing rules."""

from __future__ import annotations

import torch
from torch import nn

from styleship.models.registry import FamilySpec, GraphDef, register_family
from styleship.models.stvae import STVAE, STVAEConfig, StyleEncoderGraph, StylizerGraph
from styleship.models.vgg import resolve_vgg19
from styleship.runtime.bundle import TensorSpec

_IMAGE = ("batch", 3, "height", "width")
_STYLE = ("batch", 3, "style_height", "style_width")


def _graphs(cfg: STVAEConfig) -> tuple[GraphDef, ...]:
    z, m = cfg.z_dim, cfg.matrix_size
    code = (
        TensorSpec("style_mu", ("batch", z), "code"),
        TensorSpec("style_sigma", ("batch", z), "code"),
        TensorSpec("style_matrix", ("batch", m, m), "code"),
    )
    content = TensorSpec("content", _IMAGE, "content")
    alpha = TensorSpec("alpha", ("batch",), "strength")
    image = TensorSpec("image", _IMAGE, "image")
    return (
        GraphDef("style_encoder", StyleEncoderGraph, (TensorSpec("style", _STYLE, "style"),), code),
        GraphDef("stylizer", StylizerGraph, (content, *code, alpha), (image,)),
        GraphDef(
            "fused",
            lambda model: model,
            (content, TensorSpec("style", _STYLE, "style"), alpha),
            (image,),
        ),
    )


def _create(cfg: STVAEConfig, vgg_source: str | None, seed: int) -> tuple[STVAE, dict]:
    """A new ST-VAE: encoder from VGG-19, transform and decoder freshly initialised.

    The fresh parts are seeded so two runs with the same arguments build the
    same weights.
    """
    vgg, provenance = resolve_vgg19(vgg_source, cfg.width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = STVAE(cfg)
        # He-normal keeps activations at scale through the untrained decoder, so
        # an untrained model's output is a textured image rather than near-black.
        for module in model.decoder.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        # ... and a small last layer around mid-grey keeps most pixels off the clamp.
        nn.init.normal_(model.decoder.conv19.weight, std=0.02)
        nn.init.constant_(model.decoder.conv19.bias, 0.5)
    model.encoder.load_torchvision(vgg)
    weights = {
        "untrained": True,
        "note": "encoder from the VGG source below; transform and decoder freshly initialised",
        "vgg": provenance,
        "seed": seed,
    }
    return model.eval(), weights


SPEC = register_family(
    FamilySpec(
        name="stvae",
        description="ST-VAE (Liu et al. 2021): VAE-based linear feature transformation",
        config_cls=STVAEConfig,
        build=STVAE,
        create=_create,
        graphs=_graphs,
        style_code={"style_mu": "linear", "style_sigma": "rms", "style_matrix": "linear"},
        summary=lambda model: {
            "z_dim": model.config.z_dim,
            "matrix_size": model.config.matrix_size,
        },
    )
)
