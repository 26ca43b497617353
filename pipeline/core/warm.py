"""The warm network: VGG-19 loaded once on a device, frozen, with the speed settings it runs
under. Everything that needs features (the targets, the objective, the yardstick, the MMD)
asks one `WarmNetwork`; none of them knows about `Stylizer`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .device import fp32_matmuls, pick_device, use_compile_cache
from .errors import ParamError
from .network import CONTENT_LAYERS, STYLE_LAYERS, VGGFeatures
from .params import DEFAULT_WEIGHTS
from .weights import file_sha256, load_state, weights_file

log = logging.getLogger(__name__)

# Taps used only for Gram matrices: with `bf16_grams` they stay bf16.
_GRAM_ONLY = frozenset(STYLE_LAYERS) - frozenset(CONTENT_LAYERS)


@dataclass(frozen=True)
class SpeedSettings:
    """How the network and the loop run. Each lever leaves the result within a stated tolerance
    (tests/core/test_engine.py; on a GPU tests/benchmarks/gpu_check.py). `for_device` gives
    each unset lever the default for the device; the measurements behind the defaults are in
    tests/benchmarks/RESULTS.md (GPU check, Levers tried, Issue 31's engine levers)."""

    # NHWC for the network: cuDNN's bf16 kernels want it on a GPU; noise on the CPU.
    channels_last: bool = False
    # cuDNN's autotuning, process-wide and left on: no consistent gain over its heuristics.
    cudnn_benchmark: bool = False
    # torch.compile of the Gram and loss terms: within the runs' spread, for a compile per shape.
    compile: bool = False
    # Each iteration replayed as one CUDA graph (`device.GraphedStep`): pays on a GPU.
    cuda_graphs: bool = False
    # The optimization's float32 matmuls in TF32 on a GPU: faster at distances within tolerance.
    tf32: bool = False
    # In bf16, the style taps go into the Gram products in bf16 (float32 sums): faster on the CPU.
    bf16_grams: bool = False
    # L-BFGS's history in bf16: half its memory, but slower on the CPU; for a GPU's memory.
    bf16_history: bool = False
    # torch.compile of the network and losses with their backward: faster an iteration on the
    # CPU, but a compile per new shape and node; the compiled code is cached on disk.
    compile_step: bool = False

    @classmethod
    def for_device(cls, device: torch.device, **chosen: bool | None) -> SpeedSettings:
        """The settings for `device`, with the levers in `chosen` that are not None as given."""
        unknown = sorted(set(chosen) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ParamError(unknown[0], "not a speed setting of the network")
        cuda = device.type == "cuda"
        defaults = cls(
            channels_last=cuda,
            cuda_graphs=cuda,
            tf32=cuda,
            bf16_grams=not cuda,
        )
        settings = dataclasses.replace(
            defaults, **{k: v for k, v in chosen.items() if v is not None}
        )
        # A CUDA graph needs CUDA: asked for on another device, it is off.
        return dataclasses.replace(settings, cuda_graphs=cuda and settings.cuda_graphs)


class WarmNetwork:
    """VGG-19 on a device, loaded once and frozen, its taps by name."""

    def __init__(
        self, weights: str = DEFAULT_WEIGHTS, device: str = "auto", **levers: bool | None
    ) -> None:
        self.device = pick_device(device)
        self.weights = weights
        self.speed = SpeedSettings.for_device(self.device, **levers)
        if self.device.type == "cuda" and self.speed.cudnn_benchmark:
            # Process-wide and left on (not scoped like `matmuls`): shapes repeat every iteration,
            # and a warm network lives as long as its process.
            torch.backends.cudnn.benchmark = True
        started = time.perf_counter()
        state, convention = load_state(weights)
        taps = tuple(dict.fromkeys(STYLE_LAYERS + CONTENT_LAYERS))
        self.net = VGGFeatures(state, convention, taps).to(self.device)
        if self.speed.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if self.speed.compile or self.speed.compile_step:
            use_compile_cache()
        self.weights_sha256 = file_sha256(weights_file(weights))
        self.load_seconds = time.perf_counter() - started
        log.info("VGG-19 (%s) on %s in %.1fs", weights, self.device, self.load_seconds)

    def features(
        self, x: torch.Tensor, pooling: str, precision: str = "fp32"
    ) -> dict[str, torch.Tensor]:
        """VGG taps of `x`, float32; with "bf16" the network itself runs in bfloat16
        (autocast) and its taps are cast to float32 for the Gram matrices and losses, except the
        style taps when `bf16_grams` is on: `losses.gram` takes them in bf16 and returns float32."""
        if self.speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = precision == "bf16"
        ctx = (
            # No cast cache under graph capture: a cached cast would outlive its graph.
            torch.autocast(
                self.device.type, torch.bfloat16, cache_enabled=not self.speed.cuda_graphs
            )
            if bf16
            else contextlib.nullcontext()
        )
        with ctx:
            feats = self.net(x, pooling=pooling)
        if not bf16:
            return feats
        keep = self.speed.bf16_grams
        return {k: v if keep and k in _GRAM_ONLY else v.float() for k, v in feats.items()}

    def on_device(self, image: torch.Tensor) -> torch.Tensor:
        """An RGB image (3, H, W) as the network takes it: (1, 3, H, W) float32 on the device."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ParamError("image", f"expected a (3, H, W) RGB tensor, got {tuple(image.shape)}")
        return image.to(self.device, torch.float32)

    @contextlib.contextmanager
    def matmuls(self, exact: bool = False) -> Iterator[None]:
        """The optimization's float32 matmuls for the block: TF32 when `tf32` is on, or in full
        float32 (`exact`, the yardstick's) where TF32 would otherwise be left on."""
        mode = ("ieee" if exact else "tf32") if self.speed.tf32 else None
        with fp32_matmuls(mode):
            yield
