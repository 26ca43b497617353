"""The GPU check (issue 18): one run that prints every figure the GPU goals need, in tables that
name the card. Runs on the CPU too (`--quick`, tiny sizes) so that it is tested before a device
is lent; `gpu_check.sh` runs it on a fresh device machine.

Prints:
1. host reads per level: the optimization loop must not wait for the GPU once per iteration
   (torch.cuda sync debug mode counts the synchronizations for a short and a long run);
2. seconds per iteration and peak memory at 256, 512 and 1024 px (slope of a short and a long
   run: loading, targets and set-up excluded);
3. one 512 px x 500-iteration pair, end to end; 3a. the same without CUDA graphs (their memory);
2b. achieved TFLOP/s at 256 and 512 px (1.44 MFLOP a pixel-iteration: pipeline/job/estimate.py),
   and its share of the card's dense bf16 peak;
4. dataset mode, 256 px x 200 iterations: images per second by batch size; 4b. the same with
   convergence stopping (`converge`), images per second and the judged loss against the fixed
   budget's; 4c. with convergence stopping and continuous batching (`stylize_stream`: 4 batches
   of pairs through one batch's slots, a converged pair's slot taking the next pair);
5. the levers (bf16, channels_last, cudnn.benchmark, torch.compile of the losses, CUDA graphs, TF32
   matmuls; issue 31's bf16 Gram taps, bf16 L-BFGS history, torch.compile of the step) one at a
   time against the plain fp32 path: time per iteration, and the distances of a result against
   the plain path's (tolerance: 10 %, as for bf16 on the CPU);
6. actors per GPU: one or two processes running the worker loop on the same card;
7. the worker loop (what an actor runs: decode, stylize in batches, encode, write) over 64 pairs
   with `nvidia-smi` sampled every 100 ms: how busy the card was, and the time a pair costs
   outside the optimization, one call at a time and two at once (as an actor takes them).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_mb, sync  # noqa: E402

from pipeline.core.device import default_stack  # noqa: E402
from pipeline.core.engine import Stylizer  # noqa: E402
from pipeline.core.measure import objective  # noqa: E402
from pipeline.core.params import StyleParams  # noqa: E402
from pipeline.fanout.rows import JobContext  # noqa: E402
from pipeline.fanout.worker import PairWorker  # noqa: E402
from pipeline.io import images  # noqa: E402
from pipeline.io.results import new_run_id  # noqa: E402
from pipeline.job.estimate import FLOP_PER_PIXEL_ITERATION  # noqa: E402
from pipeline.job.load import parse_spec  # noqa: E402
from pipeline.job.plan import make_plan  # noqa: E402

TOLERANCE = 0.10  # distances of a lever's result vs the plain path's, relative
# Dense bf16 tensor-core peaks from the cards' data sheets (SXM), by a word of the device name.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
# Convergence stopping as dataset mode would use it (StyleParams.converge, converge_window).
CONVERGE, WINDOW = 0.005, 10
# Kernel names that are convolutions (cuDNN's and CUTLASS's forward, data- and weight-gradient).
CONV_KERNELS = ("conv", "cudnn", "implicit_gemm", "fprop", "dgrad", "wgrad")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def pictures(n: int, size: int, seed: int) -> list[torch.Tensor]:
    """Smooth random 'photos' and 'paintings': low-frequency noise upsampled, (3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        low = torch.rand(1, 3, 8, 8, generator=g)
        img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")[0]
        out.append((img + 0.15 * torch.rand(3, size, size, generator=g)).clamp(0, 1))
    return out


def timed(st: Stylizer, contents, styles, params: StyleParams) -> float:
    sync(st.device)
    started = time.perf_counter()
    st.stylize_stack(contents, [[s] for s in styles], params=params)
    sync(st.device)
    return time.perf_counter() - started


def per_iteration(st: Stylizer, size: int, batch: int, short: int, long: int, **kw) -> float:
    """Seconds per iteration for `batch` pairs at `size` px: the slope between two run lengths."""
    contents, styles = pictures(batch, size, 1), pictures(batch, size, 2)
    timed(st, contents, styles, StyleParams(schedule=((size, 2),), **kw))  # warm-up, autotune
    a = timed(st, contents, styles, StyleParams(schedule=((size, short),), **kw))
    b = timed(st, contents, styles, StyleParams(schedule=((size, long),), **kw))
    return (b - a) / (long - short)


def host_syncs(st: Stylizer, size: int, iterations: int) -> int:
    """Synchronizations during one stylization, counted by CUDA's sync debug mode."""
    if st.device.type != "cuda":
        return -1
    content, style = pictures(1, size, 3)[0], pictures(1, size, 4)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            st.stylize(content, [style], params=StyleParams(schedule=((size, iterations),)))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def one_pair(
    st: Stylizer, content: torch.Tensor, style: torch.Tensor, params: StyleParams
) -> tuple[float, float]:
    """(seconds, peak memory MB) of one pair's stylization, end to end."""
    reset_peak(st.device)
    sync(st.device)
    started = time.perf_counter()
    st.stylize(content, [style], params=params)
    sync(st.device)
    return time.perf_counter() - started, peak_mb(st.device)


def kernel_profile(device: str, size: int, batch: int, iterations: int, path: Path | None):
    """Where the GPU's time goes in eager mode: the top kernels of a short batched run."""
    from torch.profiler import ProfilerActivity, profile

    st = Stylizer(device=device, cuda_graphs=False)
    contents, styles = pictures(batch, size, 15), pictures(batch, size, 16)
    timed(st, contents, styles, StyleParams(schedule=((size, 2),)))
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(activities=activities) as prof:
        timed(st, contents, styles, StyleParams(schedule=((size, iterations),)))
    events = prof.key_averages()
    table = events.table(sort_by="self_cuda_time_total", row_limit=40)
    if path is not None:
        path.write_text(table)
    return table.splitlines()[:18], conv_share(events)


def conv_share(events) -> float:
    """The convolution kernels' share of the GPU kernels' time in a profile."""
    from torch.autograd import DeviceType

    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    time_of = lambda e: getattr(e, "self_device_time_total", None) or e.self_cuda_time_total  # noqa: E731
    total = sum(time_of(e) for e in kernels)
    conv = sum(time_of(e) for e in kernels if any(k in e.key.lower() for k in CONV_KERNELS))
    return conv / total if total else float("nan")


def judged_loss(st: Stylizer, image, content, style, params: StyleParams) -> float:
    """The objective the optimization minimizes, recomputed on the result in float32."""
    q = st.measure(image, content, [style], params=params)
    return objective(q, params)


def converged_rate(st: Stylizer, contents, styles, size: int, iterations: int):
    """Dataset mode with and without convergence stopping, one stack: (images/s fixed, images/s
    with converge, mean iterations run, mean judged loss with converge over the fixed one's)."""
    rates, results = [], []
    for converge in (0.0, CONVERGE):
        params = StyleParams(
            schedule=((size, iterations),), converge=converge, converge_window=WINDOW
        )
        sync(st.device)
        started = time.perf_counter()
        out = st.stylize_stack(contents, [[s] for s in styles], params=params)
        sync(st.device)
        rates.append(len(contents) / (time.perf_counter() - started))
        results.append((out, params))
    (fixed, fixed_params), (early, early_params) = results
    ratios = [
        judged_loss(st, e.image, c, s, early_params) / judged_loss(st, f.image, c, s, fixed_params)
        for f, e, c, s in zip(fixed, early, contents, styles, strict=True)
    ]
    iterations_run = sum(e.iterations for e in early) / len(early)
    return rates[0], rates[1], iterations_run, sum(ratios) / len(ratios)


def streamed_rate(st: Stylizer, contents, styles, size: int, iterations: int, slots: int):
    """Continuous batching: the pairs through `slots` slots with convergence stopping
    (`stylize_stream`) against stacks of `slots` with the fixed budget: (images/s fixed,
    images/s streamed, mean iterations run, mean judged loss streamed over fixed)."""
    fixed = StyleParams(schedule=((size, iterations),))
    early = fixed.replace(converge=CONVERGE, converge_window=WINDOW)
    sync(st.device)
    started = time.perf_counter()
    stacked = []
    for i in range(0, len(contents), slots):
        chunk = slice(i, i + slots)
        stacked += st.stylize_stack(contents[chunk], [[s] for s in styles[chunk]], params=fixed)
    sync(st.device)
    fixed_rate = len(contents) / (time.perf_counter() - started)
    streamed: dict[int, object] = {}
    sync(st.device)
    started = time.perf_counter()
    st.stylize_stream(
        contents,
        [[s] for s in styles],
        params=early,
        slots=slots,
        on_result=streamed.__setitem__,
    )
    sync(st.device)
    rate = len(contents) / (time.perf_counter() - started)
    ratios = [
        judged_loss(st, streamed[i].image, c, s, early)
        / judged_loss(st, stacked[i].image, c, s, fixed)
        for i, (c, s) in enumerate(zip(contents, styles, strict=True))
    ]
    ran = sum(streamed[i].iterations for i in streamed) / len(streamed)
    return fixed_rate, rate, ran, sum(ratios) / len(ratios)


def distances(st: Stylizer, image, content, style) -> tuple[float, float]:
    return st.distances(image, content, [style])


def lever_rows(args, device: str) -> list[str]:
    """Each lever alone on top of the plain fp32 path, then all that paid together."""
    rows: list[str] = []
    content, style = pictures(1, args.lever_size, 5)[0], pictures(1, args.lever_size, 6)[0]
    reference = None
    plain = dict(
        channels_last=False,
        cudnn_benchmark=False,
        compile=False,
        cuda_graphs=False,
        tf32=False,
        bf16_grams=False,
        bf16_history=False,
        compile_step=False,
    )
    configs = [
        ("plain fp32", plain, "fp32"),
        ("bf16", plain, "bf16"),
        ("channels_last", {**plain, "channels_last": True}, "fp32"),
        ("cudnn.benchmark", {**plain, "cudnn_benchmark": True}, "fp32"),
        ("compile (losses)", {**plain, "compile": True}, "fp32"),
        ("CUDA graphs", {**plain, "cuda_graphs": True}, "fp32"),
        ("TF32 matmuls", {**plain, "tf32": True}, "fp32"),
        # Issue 31: the style taps into the Gram in bf16 (bf16 precision), the L-BFGS history in
        # bf16, torch.compile of the network, losses and backward (its compile in the "s" column).
        ("bf16 + bf16 Gram taps", {**plain, "bf16_grams": True}, "bf16"),
        ("bf16 L-BFGS history", {**plain, "bf16_history": True}, "fp32"),
        ("compile (step)", {**plain, "compile_step": True}, "fp32"),
        (
            "graphs + bf16 taps + bf16 history",
            {
                **plain,
                "cuda_graphs": True,
                "bf16_grams": True,
                "bf16_history": True,
                "channels_last": True,
                "tf32": True,
            },
            "bf16",
        ),
        ("defaults (auto)", dict(), "auto"),
    ]
    if args.skip_compile:
        configs = [c for c in configs if not (c[1].get("compile") or c[1].get("compile_step"))]
    for name, levers, precision in configs:
        try:
            row, measured = _lever_row(args, device, name, levers, precision, content, style)
            reference = reference or measured
            rc, rs = measured[0] / reference[0] - 1, measured[1] / reference[1] - 1
            ok = abs(rc) <= TOLERANCE and abs(rs) <= TOLERANCE
            row += f" {rc:+.1%} | {rs:+.1%} | {'yes' if ok else 'NO'} |"
        except Exception as exc:  # one lever failing must not lose the others' figures
            row = f"| {name} | failed: {type(exc).__name__}: {str(exc)[:300]} |"
        rows.append(row)
        print(f"   {row}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def _lever_row(args, device, name, levers, precision, content, style):
    """The timing columns of one lever's row, and its result's (content, style) distances."""
    torch.backends.cudnn.benchmark = False  # the lever sets it when asked
    st = Stylizer(device=device, **levers)
    started = time.perf_counter()
    size, batch = args.lever_size, args.lever_batch
    s1 = per_iteration(st, size, 1, args.short, args.long, precision=precision)
    sb = per_iteration(
        st, args.batch_size_for_levers, batch, args.short, args.long, precision=precision
    )
    params = StyleParams(schedule=((size, args.lever_iters),), precision=precision)
    result = st.stylize(content, [style], params=params)
    measured = distances(st, result.image, content, style)
    seconds = time.perf_counter() - started
    return f"| {name} | {1000 * s1:.2f} | {1000 * sb / batch:.2f} | {seconds:.0f} |", measured


def _actor_process(device: str, size: int, iters: int, batch: int, rounds: int, q, go) -> None:
    st = Stylizer(device=device)
    contents, styles = pictures(batch, size, 7), pictures(batch, size, 8)
    params = StyleParams(schedule=((size, iters),))
    timed(st, contents, styles, StyleParams(schedule=((size, 2),)))
    q.put("ready")
    go.get()  # start together
    started = time.perf_counter()
    for _ in range(rounds):
        st.stylize_stack(contents, [[s] for s in styles], params=params)
    sync(st.device)
    q.put(time.perf_counter() - started)


def actors_per_gpu(device: str, size: int, iters: int, batch: int, rounds: int, n: int) -> float:
    """Images per second with `n` processes (actors) sharing the device."""
    ctx = mp.get_context("spawn")
    queues, gos = [ctx.Queue() for _ in range(n)], [ctx.Queue() for _ in range(n)]
    procs = [
        ctx.Process(target=_actor_process, args=(device, size, iters, batch, rounds, q, go))
        for q, go in zip(queues, gos, strict=True)
    ]
    for p in procs:
        p.start()
    for q in queues:
        assert q.get(timeout=600) == "ready"
    started = time.perf_counter()
    for go in gos:
        go.put("go")
    for q in queues:
        q.get(timeout=600)
    wall = time.perf_counter() - started
    for p in procs:
        p.join()
    return n * rounds * batch / wall


def worker_loop(
    device: str, pairs: int, size: int, iters: int, batch: int, tmp: Path, calls: int = 1
):
    """The actor's code path without Ray: `pairs` pairs through PairWorker.run_pairs in chunks,
    `calls` of them at once (an actor takes two, `max_concurrency=2`: one decodes and writes
    while the other holds the device). Also returns the seconds spent inside the optimization,
    so that wall minus that is the time a pair costs outside it on the critical path."""
    g = torch.Generator().manual_seed(9)
    for i in range(pairs):  # dataset mode: one painting per content, so one pair per content
        images.save_png(torch.rand(3, size + 32, size, generator=g), tmp / "c" / f"{i:03d}.png")
    for i in range(8):
        images.save_png(pictures(1, size, 10 + i)[0], tmp / "s" / f"{i}.png")
    spec = parse_spec(
        {
            "name": "gpu-check",
            "content": {"source": str(tmp / "c")},
            "styles": {"source": str(tmp / "s")},
            "params": {"schedule": [[size, iters]]},
            "output": str(tmp / "out"),
            "dataset": {"size_policy": "crop", "size": size, "format": "jpeg"},
        }
    )
    plan = make_plan(spec)
    todo = sorted(plan.pairs, key=lambda p: (p.style.identity, p.content.identity))
    ctx = JobContext(
        "gpu-check", new_run_id(), spec.output, "check", spec.params, dataset=spec.dataset
    )
    worker = PairWorker(ctx, device=device, stack=batch)
    worker.run_pairs(todo[:batch])  # warm-up: autotuning, Gram targets of the first style
    optimizing = [0.0]
    inner = worker.dispatcher._optimize

    def timed_optimize(pairs, chunk, retry=True):
        sync(worker.stylizer.device)
        started = time.perf_counter()
        try:
            return inner(pairs, chunk, retry)
        finally:
            sync(worker.stylizer.device)
            optimizing[0] += time.perf_counter() - started

    worker.dispatcher._optimize = timed_optimize
    sampler = None
    if device.startswith("cuda") and shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        sampler = subprocess.Popen([*query, "-lms", "100"], stdout=subprocess.PIPE, text=True)
    started = time.perf_counter()
    chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
    with ThreadPoolExecutor(calls) as pool:
        rows = [row for done in pool.map(worker.run_pairs, chunks) for row in done]
    wall = time.perf_counter() - started
    busy = float("nan")
    if sampler is not None:
        sampler.terminate()
        samples = [float(v) for v in sampler.communicate()[0].split() if v.strip()]
        busy = sum(samples) / max(1, len(samples))
    done = sum(r["status"] == "done" for r in rows)
    compute = sum(r["seconds"] for r in rows)
    return len(todo), done, wall, busy, compute, optimizing[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: tests the script")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    quick = args.quick
    sizes = (32, 48, 64) if quick else (256, 512, 1024)
    args.short, args.long = (2, 4) if quick else (10, 40)
    pair_size, pair_iters = (48, 10) if quick else (512, 500)
    ds_size, ds_iters = (32, 4) if quick else (256, 200)
    batches = (1, 2, 4) if quick else (1, 4, 8, 16, 32)
    args.lever_size, args.lever_iters, args.lever_batch = (48, 10, 2) if quick else (512, 100, 8)
    args.batch_size_for_levers = 32 if quick else 256
    loop_pairs, loop_size, loop_iters = (8, 32, 3) if quick else (64, 256, 200)
    report: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        report.append(line)

    st = Stylizer(device=args.device)
    dev = st.device
    out(f"machine: {machine()}")
    out(
        f"device {dev}; Stylizer defaults: channels_last={st.speed.channels_last}, "
        f"cudnn.benchmark={torch.backends.cudnn.benchmark}, compile={st.speed.compile}, "
        f"cuda_graphs={st.speed.cuda_graphs}, tf32={st.speed.tf32}; "
        f"VGG-19 load {st.load_seconds:.2f} s"
    )
    t0 = time.perf_counter()

    out()
    short_syncs, long_syncs = host_syncs(st, 128, 5), host_syncs(st, 128, 25)
    out(
        f"1. host synchronizations in one 128 px run: {short_syncs} at 5 iterations, "
        f"{long_syncs} at 25 (equal: none per iteration; -1: not a CUDA device)"
    )

    out()
    out("2. | size px | s / iteration (1 pair, defaults) | peak memory MB |")
    out("   | --- | --- | --- |")
    per_it = {}
    for size in sizes:
        reset_peak(dev)
        s = per_it[size] = per_iteration(st, size, 1, args.short, args.long)
        out(f"   | {size} | {s * 1000:.2f} ms | {peak_mb(dev):.0f} |")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak = next((p for word, p in BF16_PEAK.items() if word in name), None)
    cells = []
    for size in sizes[:2]:
        rate = size * size * FLOP_PER_PIXEL_ITERATION / per_it[size]
        share = f", {rate / peak:.1%} of the bf16 peak" if peak else ""
        cells.append(f"{rate / 1e12:.1f} TFLOP/s at {size} px{share}")
    peak_words = f"{peak / 1e12:.0f} TFLOP/s dense" if peak else "unknown for this device"
    out(f"2b. achieved, 1 pair: {'; '.join(cells)} (bf16 peak {peak_words})")

    out()
    content, style = pictures(1, pair_size, 11)[0], pictures(1, pair_size, 12)[0]
    pair = StyleParams(schedule=((pair_size, pair_iters),))
    seconds, memory = one_pair(st, content, style, pair)
    out(
        f"3. one pair, {pair_size} px x {pair_iters} L-BFGS iterations: "
        f"{seconds:.2f} s, peak memory {memory:.0f} MB"
    )
    # What the CUDA graph costs in memory, in the same run (issue 31's <= 2 GB: 3.05 GB with
    # graphs against 1.27 GB without, on an H200, came from two runs).
    eager = Stylizer(device=args.device, cuda_graphs=False)
    seconds, memory = one_pair(eager, content, style, pair)
    out(f"3a. the same pair without CUDA graphs: {seconds:.2f} s, peak memory {memory:.0f} MB")

    out()
    out(f"4. dataset mode, {ds_size} px x {ds_iters} iterations, one process:")
    out("   | batch | s / batch | images / s | peak memory MB |")
    out("   | --- | --- | --- | --- |")
    for b in batches:
        contents, styles = pictures(b, ds_size, 13), pictures(b, ds_size, 14)
        timed(st, contents, styles, StyleParams(schedule=((ds_size, 2),)))  # warm-up
        reset_peak(dev)
        s = timed(st, contents, styles, StyleParams(schedule=((ds_size, ds_iters),)))
        out(f"   | {b} | {s:.2f} | {b / s:.1f} | {peak_mb(dev):.0f} |")
    b = batches[-1]
    fixed_rate, early_rate, ran, ratio = converged_rate(
        st, pictures(b, ds_size, 13), pictures(b, ds_size, 14), ds_size, ds_iters
    )
    out(
        f"4b. dataset mode with convergence stopping (converge {CONVERGE}, window {WINDOW}), "
        f"batch {b}: {early_rate:.1f} images/s against {fixed_rate:.1f} fixed; {ran:.0f} of "
        f"{ds_iters} iterations run on average; judged loss {ratio:.3f} of the fixed budget's"
    )
    line = (
        f"4c. dataset mode with convergence stopping and continuous batching "
        f"(CUDA graphs {'on' if st.speed.cuda_graphs else 'off'}), "
        f"{4 * b} pairs through {b} slots: "
    )
    try:  # its CUDA graph is new (2026-12-02) and not yet run on a GPU: keep the lines after it
        fixed_rate, rate, ran, ratio = streamed_rate(
            st, pictures(4 * b, ds_size, 15), pictures(4 * b, ds_size, 16), ds_size, ds_iters, b
        )
        out(
            f"{line}{rate:.1f} images/s against {fixed_rate:.1f} fixed in stacks of {b}; "
            f"{ran:.0f} of {ds_iters} iterations run on average; judged loss {ratio:.3f} of the "
            "fixed budget's"
        )
    except Exception as exc:  # noqa: BLE001 - reported, and the check goes on
        out(f"{line}FAILED: {exc!r}")
    del st
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    out()
    out(
        f"5. levers, one at a time: s/iteration at {args.lever_size} px (1 pair) and per image "
        f"at {args.batch_size_for_levers} px (batch {args.lever_batch}); distances of a "
        f"{args.lever_iters}-iteration result vs plain fp32 (tolerance {TOLERANCE:.0%})"
    )
    out(
        "   | lever | ms / it, 1 pair | ms / it / image, batch | s | content dist | style dist | "
        "within |"
    )
    out("   | --- | --- | --- | --- | --- | --- | --- |")
    report += [f"   {r}" for r in lever_rows(args, args.device)]

    out()
    out(f"8. eager mode's top kernels, {ds_size} px, batch 16, 10 iterations:")
    try:
        where = Path(os.environ.get("OUT", tempfile.gettempdir())) / "kernels.txt"
        lines, share = kernel_profile(args.device, ds_size, 16, 3 if quick else 10, where)
        for line in lines:
            out(f"   {line}")
        out(f"   convolution kernels: {share:.1%} of the GPU kernels' time")
    except Exception as exc:
        out(f"   failed: {type(exc).__name__}: {exc}")

    out()
    auto_b = default_stack(dev.type, ds_size)
    rounds = 1 if quick else 3
    out(f"6. actors per GPU: dataset images/s at {ds_size} px x {ds_iters}, batch {auto_b}")
    for n in (1, 2):
        try:
            rate = actors_per_gpu(args.device, ds_size, ds_iters, auto_b, rounds, n)
            out(f"   {n} process(es): {rate:.1f} images/s")
        except Exception as exc:
            out(f"   {n} process(es): failed: {type(exc).__name__}: {exc}")

    out()
    for calls in (1, 2):
        tmp = Path(tempfile.mkdtemp(prefix="nst-gpu-check-"))
        n, done, wall, busy, compute, optimizing = worker_loop(
            args.device, loop_pairs, loop_size, loop_iters, auto_b, tmp, calls
        )
        out(
            f"7. worker loop, {calls} call(s) at once: {done}/{n} pairs done, {loop_size} px x "
            f"{loop_iters} iterations, batch {auto_b}: {wall:.1f} s ({n / wall:.1f} pairs/s); "
            f"rows' seconds sum to {compute:.1f} s; optimization {optimizing:.1f} s, so "
            f"{1000 * (wall - optimizing) / n:.1f} ms a pair outside it on the critical path; "
            f"GPU busy {busy:.0f} % (nvidia-smi, mean of 100 ms samples)"
        )
        shutil.rmtree(tmp, ignore_errors=True)
    out()
    out(f"total {time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
