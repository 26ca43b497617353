"""VGG-19 feature extractor with named taps (`relu4_2`, never an index).

torchvision's VGG-19 architecture, truncated after the deepest tap a run needs and frozen. Its
weights come from `weights.py`; their input convention (Caffe's BGR 0-255, or torchvision's
normalized RGB) is applied by `Preprocess`, so callers always pass RGB in [0,1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import WeightsError
from .taps import CONTENT_LAYERS as CONTENT_LAYERS  # re-exported: callers ask the network
from .taps import STYLE_LAYERS as STYLE_LAYERS

# torchvision's configuration "E" (VGG-19): channels per conv, "M" for a pooling.
CFG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)


# Caffe VGG mean pixel in BGR order, 0-255 (ksimonyan's model card).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names() -> list[str]:
    """Names of torchvision's `features` modules in order: conv1_1, relu1_1, ..., pool5."""
    names, block, index = [], 1, 1
    for v in CFG:
        if v == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


LAYER_NAMES = tuple(layer_names())


def tap_size(tap: str, size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a tap's feature map for an input of `size`: each 2x2 pooling before it halves
    the sides, rounding down (what max_pool2d and avg_pool2d do)."""
    h, w = size
    for name in LAYER_NAMES[: LAYER_NAMES.index(tap)]:
        if name.startswith("pool"):
            h, w = h // 2, w // 2
    return h, w


def tap_stride(name: str) -> int:
    """Pixels per position of a tap's feature map: 2 per pooling before it (relu5_1: 16)."""
    return 2 ** sum(n.startswith("pool") for n in LAYER_NAMES[: LAYER_NAMES.index(name)])


class Preprocess(nn.Module):
    """RGB in [0,1] -> the input convention of the weights."""

    mean: torch.Tensor  # buffers
    scale: torch.Tensor

    def __init__(self, convention: str):
        super().__init__()
        self.convention = convention
        if convention == "caffe":
            mean = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1)  # as RGB
            scale = torch.full((1, 3, 1, 1), 255.0)
        else:
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            scale = 1.0 / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) RGB in [0,1]
        if self.convention == "caffe":
            x = x * self.scale - self.mean
            return x.flip(1)  # RGB -> BGR
        return (x - self.mean) * self.scale


class VGGFeatures(nn.Module):
    """Frozen VGG-19 `features`, truncated at the deepest requested tap; returns taps by name."""

    def __init__(self, state: dict[str, torch.Tensor], convention: str, taps: tuple[str, ...]):
        super().__init__()
        unknown = [t for t in taps if t not in LAYER_NAMES]
        if unknown:
            raise ValueError(f"unknown VGG-19 layer {unknown[0]!r}; known: {LAYER_NAMES}")
        self.taps = tuple(taps)
        self.order = LAYER_NAMES[: max(LAYER_NAMES.index(t) for t in taps) + 1]
        self.preprocess = Preprocess(convention)
        convs, in_ch = {}, 3
        names = (n for n in LAYER_NAMES if n.startswith("conv"))
        for v in CFG:
            if isinstance(v, int):  # not "M"
                convs[next(names)] = nn.Conv2d(in_ch, v, 3, padding=1)
                in_ch = v
        self.convs = nn.ModuleDict({n: m for n, m in convs.items() if n in self.order})
        wanted = {f"{n}.{p}" for n in self.convs for p in ("weight", "bias")}
        missing = wanted - set(state)
        if missing:
            raise WeightsError("weights", f"the state dict lacks {sorted(missing)[0]}")
        self.convs.load_state_dict({k: state[k] for k in wanted})
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, pooling: str = "max") -> dict[str, torch.Tensor]:
        """(B, 3, H, W) RGB in [0,1] -> {tap name: (B, C, h, w)}."""
        pool = F.max_pool2d if pooling == "max" else F.avg_pool2d
        x = self.preprocess(x)
        out = {}
        for name in self.order:
            if name.startswith("conv"):
                x = self.convs[name](x)
            elif name.startswith("relu"):
                x = F.relu(x)  # not in place: tapped activations must stay intact for autograd
            else:
                x = pool(x, 2, 2)
            if name in self.taps:
                out[name] = x
        return out


def from_torchvision_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision keys (`features.28.weight` or `28.weight`) -> our names (`conv5_1.weight`)."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("features.")
        index, _, param = key.partition(".")
        if index.isdigit() and int(index) < len(LAYER_NAMES):
            out[f"{LAYER_NAMES[int(index)]}.{param}"] = value
    return out
