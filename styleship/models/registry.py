"""Model families: one table row per family, so export/ and runtime/ never branch on it.

A family declares how to build its model from a config, which graphs it
exports (with their inputs and outputs), and how style codes mix. The graph
declarations travel into the bundle manifest, where the torch-free runtime
reads them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields

from torch import nn

from styleship.errors import InputError, ModelError
from styleship.runtime.bundle import TensorSpec

# Spatial axes are multiples of 8 (the encoders downsample 8×).
SPATIAL_AXES = ("height", "width", "style_height", "style_width")


@dataclass(frozen=True)
class GraphDef:
    """A graph to export: a wrapper module around the model, and its I/O."""

    name: str
    wrap: Callable[[nn.Module], nn.Module]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class FamilySpec:
    name: str
    description: str
    config_cls: type
    build: Callable[[object], nn.Module]
    # (config, VGG source, seed) -> (model with its pretrained parts loaded, weights provenance)
    create: Callable[[object, str | None, int], tuple[nn.Module, dict]]
    graphs: Callable[[object], tuple[GraphDef, ...]]
    # style-code tensor -> how several styles combine: "linear" or "rms" (√Σwσ²).
    style_code: dict[str, str]
    # model -> family-specific facts for the manifest (e.g. codebook usage)
    summary: Callable[[nn.Module], dict]
    # config -> manifest fields the config decides: `strength` (how α applies, when the
    # stylizer graph takes none) and `normalisation` entries (e.g. the style size multiple)
    declare: Callable[[object], dict] = lambda config: {}
    # (config, teacher bundle or None, training images, seed) -> (model, provenance), or
    # None when the config starts from scratch (train/trainer.py then calls `create`)
    warm_start: Callable[..., tuple[nn.Module, dict] | None] = lambda *args: None

    def config_from_dict(self, data: dict):
        known = {f.name for f in fields(self.config_cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"{self.name} config has unknown keys: {', '.join(unknown)}")
        return self.config_cls(**data)


_FAMILIES: dict[str, FamilySpec] = {}
KNOWN_FAMILIES = ("stvae", "vqvae")


def register_family(spec: FamilySpec) -> FamilySpec:
    _FAMILIES[spec.name] = spec
    return spec


def get_family(name: str) -> FamilySpec:
    if name not in KNOWN_FAMILIES:
        raise InputError(f"unknown model family {name!r}; known: {', '.join(KNOWN_FAMILIES)}")
    if name not in _FAMILIES:
        importlib.import_module(f"styleship.models.{name}_family")
    return _FAMILIES[name]
