"""Where and in what arithmetic the optimization runs: the device, the precision, how many pairs
it stacks into one optimization, the scope of torch's float32-matmul setting, where
torch.compile keeps its compiled code, and the CUDA graph that replays an iteration."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator

import torch

from .errors import ParamError

log = logging.getLogger(__name__)

# Calls run eagerly on a side stream before a CUDA graph captures one (PyTorch's recipe: lazy
# initializations and autotuning happen outside the capture).
GRAPH_WARMUP = 3


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParamError("device", f"{device!r} requested but torch sees no CUDA device")
    return dev


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on Linux. oneDNN emulates bf16 on older AVX-512 CPUs, more slowly than
    fp32, so "supported" is not enough."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_precision(precision: str, device: torch.device) -> str:
    """Resolve "auto" to what this device runs fastest without losing the result."""
    if precision == "bf16" and device.type == "mps":
        raise ParamError("precision", "bf16 is not supported on mps; use fp32")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if _cpu_has_native_bf16() else "fp32"
    return "fp32"


def default_stack(device_type: str, size: int) -> int:
    """Pairs to stack into one optimization by default (`Stylizer.stylize_stack`), by device and
    output long side (px).

    CPU: small images only. Below ~64 px each of VGG-19's operations costs more to launch
    than to compute, so stacking pays; from 128 px it gains nothing (tests/benchmarks/RESULTS.md,
    Scale and Levers tried). GPU: enough pairs to keep the card busy (RESULTS.md, GPU check)."""
    if device_type != "cuda":
        if size <= 32:
            return 16
        return 8 if size <= 64 else 1
    # At 256 px images/s still rose from 16 to 32 pairs, well within the card's memory (RESULTS.md,
    # GPU check). 512 px stacks were not measured: 4 keeps their memory near that of 32 at 256 px.
    if size <= 256:
        return 32
    if size <= 512:
        return 4
    return 1


@contextlib.contextmanager
def fp32_matmuls(mode: str | None) -> Iterator[None]:
    """float32 matrix products (the Gram matrices, the L-BFGS history products) in `mode` ("tf32":
    on tensor cores, inputs rounded to 10-bit mantissas, sums in float32) for the block. torch's
    float32-matmul setting is process-wide, so it is restored after: a program that also uses
    torch for something else keeps its own choice. Only this setting: `Stylizer(cudnn_benchmark=
    True)` turns cuDNN's autotuning on for the whole process and leaves it on."""
    if mode is None:
        yield
        return
    before = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = mode
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = before


def use_compile_cache() -> str | None:
    """Keep torch.compile's compiled code (Inductor's FX-graph and AOTAutograd caches, both on by
    default) under the project's cache folder, $NST_CACHE_DIR/inductor (`weights.cache_dir`),
    unless $TORCHINDUCTOR_CACHE_DIR says otherwise: the actors of a node share that folder, so a
    shape compiles once per node and every later actor and pair loads it. Set before the first
    compile (Inductor reads the variable then); returns the folder, or None when
    NST_CACHE_DIR="" turns the project's caches off (torch's own default folder is then used)."""
    from .weights import cache_dir

    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured:
        return configured
    base = cache_dir()
    if base is None:
        return None
    folder = str(base / "inductor")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return folder


def bmm_float32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b batched, as float32: bf16 operands are multiplied in bf16 with float32 sums, no
    float32 copy of them (CUDA writes the float32 result directly, `out_dtype`; the CPU's bf16
    matmul also sums in float32 but rounds its output to bf16, a relative 2^-9, before the cast).
    Other dtypes: a plain bmm."""
    if a.dtype != torch.bfloat16:
        return torch.bmm(a, b)
    if a.is_cuda:
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a, b).float()


def graphs_pay(enabled: bool, device: torch.device, iterations: int) -> bool:
    """Whether a loop of `iterations` steps on `device` replays a CUDA graph (`GraphedStep`):
    graphs on, a GPU, and more steps than the eager first one and the warm-up calls."""
    return enabled and device.type == "cuda" and iterations > 1 + GRAPH_WARMUP


class GraphedStep:
    """`step()` replayed as one CUDA graph: a few calls eagerly on a side stream, then one
    capture, then replays. A graph replays one whole iteration (forward, backward, L-BFGS step,
    clamp) as one launch: with ~1,000 small operations an iteration, launching them one by one
    from Python costs more than the GPU's arithmetic at 256-512 px. `step` must do the same
    operations on the same tensors every call (fixed shapes and addresses; state changed between
    calls only in place). Disabled: plain calls. A capture that fails is logged and the calls go
    on eagerly, slower but the same."""

    def __init__(self, step: Callable[[], None], enabled: bool) -> None:
        self.step, self.enabled = step, enabled
        self.warm = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self) -> None:
        if not self.enabled:
            self.step()
        elif self.warm < GRAPH_WARMUP:
            self.warm += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            if self.graph is None:
                graph = torch.cuda.CUDAGraph()
                try:
                    # thread_local: CUDA calls of other threads (a web server's progress reads)
                    # must not invalidate the capture.
                    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                        self.step()  # recorded, not run
                except RuntimeError as exc:
                    log.warning("CUDA graph capture failed (%s); running eagerly", exc)
                    self.enabled = False
                    self.step()
                    return
                self.graph = graph
            self.graph.replay()
