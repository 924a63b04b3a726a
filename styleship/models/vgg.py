"""VGG-19 up to relu5_1, and where its weights come from.

Two layouts of the same network are needed:

* `VGG19Features` keeps torchvision's parameter names (`features.N.*`) so the
  ImageNet checkpoint `vgg19-dcbb9e9d.pth` loads unchanged. It normalises with
  the ImageNet mean/std inside the module; callers pass RGB in [0, 1]. It is
  the loss network and the Gatys baseline's feature extractor.
* `NormalisedVGG` is the encoder of the official ST-VAE/LinearStyleTransfer
  code (`conv1..conv10`): a 1×1 input conv that performs the preprocessing,
  then reflection-padded 3×3 convs to relu4_1. The official checkpoint
  `vgg_r41.pth` loads into it as is.

Weights never download implicitly: `resolve_vgg19` takes a local file, the
`STYLESHIP_VGG19` environment variable, `hub` (torch hub download with its hash
check), an already cached hub file, or an explicit `random:<seed>`. Every
source returns a provenance record that checkpoints and bundles keep.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from styleship._hashing import sha256_file
from styleship.errors import ModelError
from styleship.models.checkpoint import load_pth

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's vgg19().features up to relu5_1: channels, "M" for max-pool.
_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
# Named ReLU outputs -> index in `features`.
LAYERS = {
    "relu1_1": 1,
    "relu2_1": 6,
    "relu3_1": 11,
    "relu4_1": 20,
    "relu4_2": 22,
    "relu5_1": 29,
}
# NormalisedVGG conv name -> torchvision features index (conv1 is the 1×1 preprocessing conv).
ENCODER_FROM_TORCHVISION = {
    "conv2": 0,
    "conv3": 2,
    "conv4": 5,
    "conv5": 7,
    "conv6": 10,
    "conv7": 12,
    "conv8": 14,
    "conv9": 16,
    "conv10": 19,
}


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (1.0 is the paper's network)."""
    return max(4, round(channels * width))


class VGG19Features(nn.Module):
    """torchvision-compatible VGG-19 `features` up to relu5_1, ImageNet-normalising its input."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = scaled(int(item), width)
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] = ("relu4_1",)) -> dict:
        wanted = {LAYERS[name]: name for name in layers}
        out = {}
        x = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
                if len(out) == len(wanted):
                    break
        return out


class NormalisedVGG(nn.Module):
    """The official ST-VAE encoder: RGB in [0, 1] -> relu4_1 features (8× down)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4 = (scaled(c, width) for c in (64, 128, 256, 512))
        self.conv1 = nn.Conv2d(3, 3, 1)
        plan = [(3, c1), (c1, c1), (c1, c2), (c2, c2), (c2, c3), (c3, c3), (c3, c3), (c3, c3)]
        plan.append((c3, c4))
        for i, (cin, cout) in enumerate(plan, start=2):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3))
        self.pad = nn.ReflectionPad2d(1)
        self.pool = nn.MaxPool2d(2, 2)
        self.out_channels = c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for i in range(2, 11):
            x = torch.relu(getattr(self, f"conv{i}")(self.pad(x)))
            if i in (3, 5, 9):
                x = self.pool(x)
        return x

    def load_torchvision(self, features: dict[str, torch.Tensor]) -> None:
        """Initialise from torchvision VGG-19 weights: conv1 becomes the ImageNet normalisation.

        torchvision's convs zero-pad where this encoder reflects; the official
        encoder has the same difference with respect to the Caffe VGG it came from.
        """
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.diag(1.0 / std).view(3, 3, 1, 1))
            self.conv1.bias.copy_(-mean / std)
            for name, index in ENCODER_FROM_TORCHVISION.items():
                conv = getattr(self, name)
                for part in ("weight", "bias"):
                    src = features[f"features.{index}.{part}"]
                    if src.shape != getattr(conv, part).shape:
                        raise ModelError(
                            f"VGG-19 tensor features.{index}.{part} has shape {list(src.shape)}, "
                            f"the encoder expects {list(getattr(conv, part).shape)}"
                        )
                    getattr(conv, part).copy_(src)


def random_vgg19(seed: int, width: float = 1.0) -> dict[str, torch.Tensor]:
    """Seeded random VGG-19 weights (He-normal, zero bias): not pretrained, for tests and demos."""
    gen = torch.Generator().manual_seed(seed)
    model = VGG19Features(width)
    with torch.no_grad():
        for module in model.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=gen)
                module.bias.zero_()
    return model.state_dict()


def resolve_vgg19(source: str | None, width: float = 1.0) -> tuple[dict[str, torch.Tensor], dict]:
    """Return torchvision-named VGG-19 weights and a provenance record.

    `source` is a path, `hub`, `random:<seed>` or None (then `STYLESHIP_VGG19`,
    then a cached hub download). Pretrained weights exist only at width 1.0.
    """
    source = source or os.environ.get("STYLESHIP_VGG19")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_URL).name
    if source is None and cached.is_file():
        source = str(cached)
    if source is None:
        raise ModelError(
            "no VGG-19 weights: pass --vgg PATH (vgg19-dcbb9e9d.pth), set STYLESHIP_VGG19, "
            "use --vgg hub to download them with a hash check, or --vgg random:SEED for "
            "seeded random weights (not pretrained)"
        )
    if source.startswith("random:"):
        try:
            seed = int(source.split(":", 1)[1])
        except ValueError:
            raise ModelError(f"bad VGG source {source!r}: expected random:<integer seed>") from None
        note = "seeded random weights, not pretrained: outputs are not real stylizations"
        return random_vgg19(seed, width), {"source": "random", "seed": seed, "note": note}
    if width != 1.0:
        raise ModelError(f"pretrained VGG-19 weights exist only at width 1.0, not {width}")
    if source == "hub":
        state = torch.hub.load_state_dict_from_url(VGG19_URL, check_hash=True, map_location="cpu")
        provenance = {"source": "torchvision-imagenet", "url": VGG19_URL}
    else:
        path = Path(source)
        state = load_pth(path)
        provenance = {"source": "file", "file": path.name, "sha256": sha256_file(path)}
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    expected = VGG19Features(width).state_dict()
    missing = sorted(set(expected) - set(features), key=lambda k: int(k.split(".")[1]))
    if missing:
        raise ModelError(f"{source}: not VGG-19 weights (missing {missing[0]})")
    return {k: features[k] for k in expected}, provenance
