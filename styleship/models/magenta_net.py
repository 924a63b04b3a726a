"""Magenta's arbitrary-style network in torch, for warm starts (Ghiasi, Lee, Kudlur,
Dumoulin, Shlens, "Exploring the structure of a real-time, arbitrary neural artistic
stylization network", BMVC 2017).

The pieces mirror the release that `styleship import magenta` adapts (float graphs:
the int8 QDQ pairs folded), at its own widths:

- `Contract`: three reflect-padded convolutions with ReLU (9×9 → 8, 3×3/2 → 16,
  3×3/2 → 32). The release has no normalisation here, so the content features do
  not depend on the style.
- `StyleDecoder`: five residual blocks and three expand stages, every convolution
  followed by a conditional instance norm whose scale and shift are linear maps of
  the 100-d style code; nearest ×2 upsampling; a sigmoid at the end.
- `StylePredictor`: the MobileNet-v2 style predictor (TensorFlow's SAME padding),
  after the same centre crop and antialiased resize to 256² that the import builds
  into the bundle's style encoder.

`load_magenta(bundle)` reads the weights from an imported bundle's graphs: nothing
of the package is copied, and a model trained from them records its teacher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from styleship.errors import InputError
from styleship.export.magenta_graphs import STYLE_SIDE  # the import's crop-and-resize side
from styleship.export.upsample import SUFFIX, original_weights

CODE_DIM = 100
CONTRACT = (8, 16, 32)  # channels after each contract convolution
EXPAND = (16, 8, 3)
RESIDUAL_BLOCKS = 5
EPS = 1e-5  # the release's instance-norm epsilon; load_magenta checks it


def _pad(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.pad(x, (k // 2,) * 4, mode="reflect")


class Contract(nn.Module):
    """Photo (N×3×H×W in [0, 1]) -> N×32×H/4×W/4 content features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, CONTRACT[0], 9)
        self.conv2 = nn.Conv2d(CONTRACT[0], CONTRACT[1], 3, stride=2)
        self.conv3 = nn.Conv2d(CONTRACT[1], CONTRACT[2], 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = torch.relu(conv(_pad(x, conv.kernel_size[0])))
        return x


class CondNorm(nn.Module):
    """Conditional instance norm: scale and shift are linear in the style code."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Linear(CODE_DIM, channels)
        self.shift = nn.Linear(CODE_DIM, channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = (x - mean).square().mean(dim=(2, 3), keepdim=True)
        gamma = self.scale(code)[:, :, None, None]
        beta = self.shift(code)[:, :, None, None]
        return (x - mean) * torch.rsqrt(var + EPS) * gamma + beta


class ConvNorm(nn.Module):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k)
        self.norm = CondNorm(cout)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(_pad(x, self.conv.kernel_size[0])), code)


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = ConvNorm(c, c, 3), ConvNorm(c, c, 3)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.relu(self.a(x, code)), code)


class StyleDecoder(nn.Module):
    """Content features + style code -> image in [0, 1].

    `forward(..., hints=list)` also appends each residual block's and expand
    stage's output, for feature hints against a teacher (Romero et al. 2015).
    """

    def __init__(self) -> None:
        super().__init__()
        c = CONTRACT[-1]
        self.blocks = nn.ModuleList(Residual(c) for _ in range(RESIDUAL_BLOCKS))
        self.up1 = ConvNorm(c, EXPAND[0], 3)
        self.up2 = ConvNorm(EXPAND[0], EXPAND[1], 3)
        self.out = ConvNorm(EXPAND[1], EXPAND[2], 9)

    def forward(
        self, h: torch.Tensor, code: torch.Tensor, hints: list | None = None
    ) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, code)
            if hints is not None:
                hints.append(h)
        for stage in (self.up1, self.up2):
            h = torch.relu(stage(F.interpolate(h, scale_factor=2.0, mode="nearest"), code))
            if hints is not None:
                hints.append(h)
        return torch.sigmoid(self.out(h, code))


def square(x: torch.Tensor, side: int = STYLE_SIDE) -> torch.Tensor:
    """Centre-crop N×3×H×W to a square and resize it to side² (antialiased bilinear)."""
    h, w = x.shape[-2], x.shape[-1]
    s = torch.sym_min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = x.narrow(2, top, s).narrow(3, left, s)  # sizes stay symbolic for the exporter
    return F.interpolate(crop, size=(side, side), mode="bilinear", antialias=True)


# MobileNet-v2 (Sandler et al. 2018) at width 1.0: (expansion, channels, repeats, stride).
INVERTED_RESIDUALS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)  # fmt: skip


def _conv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, 0, groups=groups)


def _same(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """TensorFlow's SAME padding: 3×3 stride 1 pads 1 all round, stride 2 pads bottom/right."""
    if conv.kernel_size[0] == 1:
        return conv(x)
    pad = (1, 1, 1, 1) if conv.stride[0] == 1 else (0, 1, 0, 1)
    return conv(F.pad(x, pad))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = _conv(cin, mid) if expansion != 1 else None
        self.depthwise = _conv(mid, mid, 3, stride, groups=mid)
        self.project = _conv(mid, cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.expand(x)) if self.expand is not None else x
        h = self.project(F.relu6(_same(h, self.depthwise)))
        return x + h if self.skip else h


class StylePredictor(nn.Module):
    """Style image (any size, [0, 1]) -> 100-d style code: centre crop, 256², MobileNet-v2."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv(3, 32, 3, 2)
        blocks, cin = [], 32
        for t, c, n, s in INVERTED_RESIDUALS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, t, s if i == 0 else 1))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv(cin, 1280)
        self.code = _conv(1280, CODE_DIM)

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        h = F.relu6(_same(square(style), self.stem))
        h = F.relu6(self.head(self.blocks(h)))
        return self.code(h.mean(dim=(2, 3), keepdim=True)).flatten(1)


def _graph(bundle: Path, name: str):
    import onnx

    path = bundle / name
    if not path.is_file():
        raise InputError(f"{bundle} has no {name}: warm starts need an imported Magenta bundle")
    return onnx.load(str(path))


def _arrays(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _predictor(bundle: Path) -> StylePredictor:
    """The style encoder's convolutions, in graph order, into a MobileNet-v2."""
    model = _graph(bundle, "style_encoder.onnx")
    inits = _arrays(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    predictor = StylePredictor()
    mine = [m for m in predictor.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != len(mine):
        raise InputError(
            f"{bundle}: {len(convs)} convolutions in the style encoder, not {len(mine)}"
        )
    with torch.no_grad():
        for conv, node in zip(mine, convs):
            w, b = inits[node.input[1]], inits[node.input[2]]
            if tuple(w.shape) != tuple(conv.weight.shape):
                shape = tuple(conv.weight.shape)
                raise InputError(f"{bundle}: a style encoder weight is {w.shape}, not {shape}")
            conv.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            conv.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    return predictor


def _transform_weights(bundle: Path) -> tuple[dict[str, torch.Tensor], float]:
    """Contract and decoder weights by this module's names, and the norms' epsilon."""
    model = _graph(bundle, "stylizer.onnx")
    inits = _arrays(model)
    bias = {n.input[1]: n.input[2] for n in model.graph.node if n.op_type == "Conv"}
    root, params = "transform/transformer/", "transform/style_params/transformer/"

    def conv(src: str) -> tuple[np.ndarray, np.ndarray]:
        w = f"{src}/weights_dequant"
        if w + SUFFIX in inits:  # a decoder stage export made sub-pixel (export/upsample.py)
            weights = original_weights(inits[w + SUFFIX])
            return weights, inits[bias[w + SUFFIX]][: weights.shape[0]]
        if w not in inits:
            raise InputError(f"{bundle}: no {w}: not a Magenta bundle")
        return inits[w], inits[bias[w]]

    sd: dict[str, np.ndarray] = {}
    for i in (1, 2, 3):
        sd[f"contract.conv{i}.weight"], sd[f"contract.conv{i}.bias"] = conv(
            f"{root}contract/conv{i}"
        )
    places = [(f"blocks.{b - 1}.{ab}", f"residual/residual{b}/conv{j}")
              for b in range(1, 6) for j, ab in ((1, "a"), (2, "b"))]  # fmt: skip
    places += [
        ("up1", "expand/conv1/conv"),
        ("up2", "expand/conv2/conv"),
        ("out", "expand/conv3/conv"),
    ]
    for mine, theirs in places:
        sd[f"decoder.{mine}.conv.weight"], sd[f"decoder.{mine}.conv.bias"] = conv(root + theirs)
        for part, tf in (("scale", "Conv_1"), ("shift", "Conv")):
            w, b = conv(f"{params}{theirs}/StyleNorm/{tf}")
            sd[f"decoder.{mine}.norm.{part}.weight"] = w.reshape(w.shape[0], -1)
            sd[f"decoder.{mine}.norm.{part}.bias"] = b
    return {k: torch.from_numpy(v.astype(np.float32)) for k, v in sd.items()}, _norm_eps(
        model, inits, f"{root}expand/conv1/conv/StyleNorm/batchnorm/add/y_dequant"
    )


def _norm_eps(model, inits: dict[str, np.ndarray], written_out: str) -> float:
    """The norms' epsilon: the InstanceNormalization nodes' (export/norms.py fuses them at
    import), or, in a bundle imported before that, the constant the written-out norm adds."""
    fused = {
        a.f
        for n in model.graph.node
        if n.op_type == "InstanceNormalization"
        for a in n.attribute
        if a.name == "epsilon"
    }
    if len(fused) == 1:
        return fused.pop()
    if written_out not in inits:
        raise InputError("no instance-norm epsilon in the stylizer graph: not a Magenta bundle")
    return float(inits[written_out].ravel()[0])


def load_magenta(bundle: str | Path) -> tuple[Contract, StyleDecoder, StylePredictor]:
    """The three pieces with the imported bundle's weights (float, as its fp32 graphs)."""
    bundle = Path(bundle)
    sd, eps = _transform_weights(bundle)
    if not np.isclose(eps, EPS, rtol=1e-3, atol=0):
        raise InputError(f"{bundle}: instance-norm epsilon {eps:g}, not Magenta's {EPS:g}")
    contract, decoder = Contract(), StyleDecoder()
    holder = nn.Module()
    holder.contract, holder.decoder = contract, decoder
    holder.load_state_dict(sd, strict=True)
    return contract, decoder, _predictor(bundle)
