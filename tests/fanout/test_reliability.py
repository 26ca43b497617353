"""Faults and bad input in real runs: every pair ends exactly once, done or failed with a reason."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.fanout.rows import JobContext
from pipeline.fanout.runner import run_plan
from pipeline.fanout.worker import PairWorker
from pipeline.io import images
from pipeline.io.lock import LOCK
from pipeline.io.results import ResultStore, new_run_id
from pipeline.io.storage import StorageError
from pipeline.job.load import parse_spec
from pipeline.job.options import RunOptions
from pipeline.job.plan import make_plan

from ..conftest import make_content, make_style, run_nst, small_card

pytestmark = pytest.mark.usefixtures("ray_module")


def _rgb(w: int = 40, h: int = 24) -> Image.Image:
    return images.to_pil(make_content(h, w, seed=w))


def _bad_and_odd_inputs(folder) -> dict[str, str | None]:
    """Write the inputs; return file name -> expected failure reason (None: must work)."""
    folder.mkdir(parents=True)
    expected: dict[str, str | None] = {}

    def save(name: str, img: Image.Image, fmt: str, reason: str | None = None, **kw) -> None:
        img.save(folder / name, fmt, **kw)
        expected[name] = reason

    save("good.png", _rgb(), "PNG")
    save("cmyk.jpg", _rgb().convert("CMYK"), "JPEG")
    save("gray16.png", Image.fromarray(np.asarray(_rgb().convert("L"), np.uint16) * 257), "PNG")
    save("palette.png", _rgb().convert("P"), "PNG")
    save("rgba.png", _rgb().convert("RGBA"), "PNG")
    save("gray.png", _rgb().convert("L"), "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    save("rotated.jpg", _rgb(48, 32), "JPEG", exif=exif.tobytes())
    frames = [_rgb(), _rgb(24, 40).resize((40, 24))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    expected["anim.gif"] = None
    save("tiny.png", Image.new("RGB", (8, 8)), "PNG", "too small: 8x8")
    # Past PIL's decompression-bomb limit (89.5 MP), yet a small file.
    save("bomb.png", Image.new("1", (10000, 9000)), "PNG", "decompression bomb")
    (folder / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "not an image"
    (folder / "text.jpg").write_text("this is a text file named .jpg\n" * 20)
    expected["text.jpg"] = "not an image"
    full = (folder / "good.png").read_bytes()
    _rgb(200, 200).save(folder / "truncated.jpg", "JPEG")
    data = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    expected["truncated.jpg"] = "corrupt or truncated"
    broken = bytearray(full)
    idat = full.index(b"IDAT") + 4
    broken[idat : idat + 8] = b"\x00\xff" * 4  # compressed data and its CRC no longer agree
    (folder / "brokenchunk.png").write_bytes(bytes(broken))
    expected["brokenchunk.png"] = "corrupt or truncated"
    save("deleted.png", _rgb(), "PNG", "file not found")  # removed between plan and run
    return expected


def test_bad_inputs_become_failed_rows_and_odd_ones_work(tmp_path):
    contents, styles = tmp_path / "contents", tmp_path / "styles"
    expected = _bad_and_odd_inputs(contents)
    images.save_png(make_style(48, 48, seed=1), styles / "s1.png")
    images.save_png(make_style(48, 48, seed=2), styles / "missing.png")
    spec = {
        "name": "bad",
        "content": {"source": str(contents)},
        "styles": {"source": str(styles)},
        "params": {"schedule": [[32, 1]]},
        "output": str(tmp_path / "out"),
    }
    plan = make_plan(parse_spec(spec))
    (contents / "deleted.png").unlink()
    (styles / "missing.png").unlink()  # a style entry whose image is gone
    summary = run_plan(plan, RunOptions(actors=1))
    assert summary.complete and summary.ran == len(plan.pairs) == 2 * len(expected)

    table = ResultStore(str(tmp_path / "out"), "bad").read().to_pandas()
    assert len(table) == len(plan.pairs) and table.pair_id.is_unique
    with_style = table[table.style_id == "s1.png"].set_index("content_id")
    for name, reason in expected.items():
        row = with_style.loc[name]
        if reason is None:
            assert row.status == "done", f"{name}: {row.error}"
        else:
            assert row.status == "failed" and reason in row.error and name in row.error, row.error
    rotated = with_style.loc["rotated.jpg"]
    assert rotated.height > rotated.width  # the right way up
    missing = table[table.style_id == "missing.png"]
    assert (missing.status == "failed").all()
    works = [name for name, reason in expected.items() if reason is None]
    readable = missing[missing.content_id.isin(works)]  # the others fail on their content first
    assert len(readable) == len(works)
    assert readable.error.str.contains("missing.png: file not found").all()


def test_nan_loss_fails_the_pair_and_the_actor_goes_on(tmp_path):
    contents, styles = tmp_path / "c", tmp_path / "s"
    for i in range(3):
        images.save_png(make_content(32, 32, seed=i), contents / f"{i}.png")
    images.save_png(make_style(32, 32), styles / "s.png")
    spec = {
        "name": "nan",
        "content": {"source": str(contents)},
        "styles": {"source": str(styles)},
        "params": {"schedule": [[32, 2]], "style_weight": 1e39},
        "output": str(tmp_path / "o"),
    }
    summary = run_plan(make_plan(parse_spec(spec)), RunOptions(actors=1))
    assert (summary.done, summary.failed, summary.complete) == (0, 3, True)
    table = ResultStore(str(tmp_path / "o"), "nan").read().to_pandas()
    assert table.error.str.startswith("loss: became inf").all()
    assert (table.error_type == "StylizeError").all() and table.actor_id.nunique() == 1


def test_a_pair_over_the_memory_limit_fails_and_the_job_continues(tmp_path):
    contents, styles = tmp_path / "c", tmp_path / "s"
    images.save_png(make_content(32, 40), contents / "small.png")
    images.save_png(make_content(400, 500), contents / "huge.png")
    images.save_png(make_style(32, 32), styles / "s.png")
    spec = {
        "name": "oom",
        "content": {"source": str(contents)},
        "styles": {"source": str(styles)},
        "params": {"schedule": [[32, 2]]},
        "output": str(tmp_path / "o"),
        "resources": {"max_pixels": 100_000},
    }
    plan = make_plan(parse_spec(spec))
    summary = run_plan(plan, RunOptions(actors=1, max_pixels=plan.spec.resources.max_pixels))
    assert (summary.done, summary.failed) == (1, 1)
    table = ResultStore(str(tmp_path / "o"), "oom").read().to_pandas().set_index("content_id")
    assert table.loc["huge.png"].error_type == "TooLarge"
    assert "exceeds this worker's limit of 0.1 MP" in table.loc["huge.png"].error


def test_file_names_cannot_steer_keys_outside_the_output(tmp_path):
    contents, styles = tmp_path / "c", tmp_path / "s"
    # (Hidden files, starting with '.', are not inputs at all.)
    tricky = [
        "x..png",
        "x..\u2215..\u2215escape.png",
        "\u202egnp.exe.png",
        "a b;rm -rf.png",
        "/tmp/abs.png".replace("/", "\u2044"),
    ]
    for i, name in enumerate(tricky):
        images.save_png(make_content(32, 32, seed=i), contents / name)
    images.save_png(make_style(32, 32), styles / "s..\u2215..\u2215style.png")
    out = tmp_path / "o"
    spec = {
        "name": "keys",
        "content": {"source": str(contents)},
        "styles": {"source": str(styles)},
        "params": {"schedule": [[32, 1]]},
        "output": str(out),
    }
    before = set(tmp_path.rglob("*"))
    summary = run_plan(make_plan(parse_spec(spec)), RunOptions(actors=1))
    assert summary.done == len(tricky)
    new = set(tmp_path.rglob("*")) - before
    assert new and all(p == out or p.is_relative_to(out / "keys") for p in new)
    for png in (out / "keys" / "images").iterdir():
        assert png.stem.isalnum() and png.stem.isascii()


def test_second_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    images.save_png(make_content(32, 32), tmp_path / "c" / "a.png")
    images.save_png(make_style(32, 32), tmp_path / "s" / "s.png")
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "locked",
                "content": {"source": str(tmp_path / "c")},
                "styles": {"source": str(tmp_path / "s")},
                "params": {"schedule": [[32, 1]]},
                "output": str(tmp_path / "o"),
                "resources": {"actors": 1},
            }
        )
    )
    lock = tmp_path / "o" / "locked" / LOCK
    lock.parent.mkdir(parents=True)
    live = {
        "run_id": "other-run",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "heartbeat": time.time(),
    }
    lock.write_text(json.dumps(live))
    proc = run_nst("run", str(job))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert ": being written by run other-run" in proc.stderr
    assert not (tmp_path / "o" / "locked" / "results").exists()  # no compute started

    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({**live, "pid": dead.pid}))
    proc = run_nst("run", str(job))
    assert proc.returncode == 0, proc.stderr
    assert not lock.exists()  # released at the end


def test_bad_specs_exit_2_with_one_line_and_no_compute(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = {
        "output": {"output": str(tmp_path / "file" / "sub")},
        "unknown key": {"colour": "red"},
        "wrong type": {"params": {"style_weight": [1]}},
        "negative iterations": {"params": {"schedule": [[64, -1]]}},
        "unknown preset": {"preset": "turbo"},
    }
    for what, change in cases.items():
        spec = {"name": "x", "content": {"source": "demo"}, "styles": {"source": "demo"}, **change}
        path = tmp_path / f"{what}.yaml"
        path.write_text(yaml.safe_dump(spec))
        proc = run_nst("run", str(path))
        assert proc.returncode == 2, (what, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (what, proc.stderr)
    proc = run_nst("run", str(tmp_path / "output.yaml"))
    assert "file/sub" in proc.stderr and "cannot write" in proc.stderr


def test_a_stack_out_of_gpu_memory_is_halved_until_it_fits(tmp_path, monkeypatch):
    """Fault injection (no GPU here): the engine raises CUDA's out-of-memory error for any stack
    of more than one pair, as a card too small for the stack would. The worker halves the
    stack down to single pairs and every pair is done; a single pair that does not fit becomes
    a retriable failed row."""
    worker, pairs = _worker_on_files(tmp_path, "oom", 4, stack=4)
    sizes: list[int] = []
    small_card(worker.stylizer, monkeypatch, sizes)
    rows = worker.run_pairs(pairs)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert sizes == [4, 2, 1, 1, 2, 1, 1]

    def no_card(contents, styles, **kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(worker.stylizer, "stylize_stack", no_card)
    rows = worker.run_pairs(pairs[:2])
    assert [(r["status"], r["retriable"]) for r in rows] == [("failed", True)] * 2
    assert all(r["error_type"] == "OutOfMemoryError" for r in rows)


def _worker_on_files(tmp_path, job: str, contents: int, stack: int, params: dict | None = None):
    """A CPU PairWorker and the pairs of `contents` generated photos (plus any files already in
    tmp_path/c) crossed with one style, under `params` (default: 32 px x 2)."""
    for i in range(contents):
        images.save_png(make_content(40, 56, seed=i), tmp_path / "c" / f"{i}.png")
    images.save_png(make_style(seed=9), tmp_path / "s" / "s.png")
    spec = parse_spec(
        {
            "name": job,
            "content": {"source": str(tmp_path / "c")},
            "styles": {"source": str(tmp_path / "s")},
            "params": params or {"schedule": [[32, 2]]},
            "output": str(tmp_path / "out"),
        }
    )
    ctx = JobContext(job, new_run_id(), spec.output, "fast", spec.params)
    return PairWorker(ctx, device="cpu", stack=stack), make_plan(spec).pairs


def test_an_image_that_cannot_be_written_is_a_retriable_row(tmp_path, monkeypatch):
    """Fault injection: the store refuses the result image after the pair was stylized. The
    pair becomes a retriable failed row; its stack-mate, written fine, is done."""
    worker, pairs = _worker_on_files(tmp_path, "wfail", 2, stack=2)
    real = worker.store.write_image

    def flaky(pair_id, data):
        if pair_id == pairs[0].pair_id:
            raise StorageError(f"images/{pair_id}.png", "store unreachable (injected)")
        return real(pair_id, data)

    monkeypatch.setattr(worker.store, "write_image", flaky)
    first, second = worker.run_pairs(pairs)
    assert (first["status"], first["retriable"], first["error_type"]) == (
        "failed",
        True,
        "StorageError",
    )
    assert second["status"] == "done" and second["seconds"] > 0


def test_a_bug_is_not_bad_input(tmp_path, monkeypatch, caplog):
    """Fault injection: the engine raises a ValueError as a bug would (not the input's fault).
    The stack is retried pair by pair, then each pair is a retriable row that keeps the
    traceback, and the error is logged with it; a truly bad image stays a final row."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "empty.png").write_bytes(b"")
    worker, pairs = _worker_on_files(tmp_path, "bug", 2, stack=2)
    calls = []

    def buggy(contents, styles, **kw):
        calls.append(len(contents))
        raise ValueError("operands could not be broadcast together (injected)")

    monkeypatch.setattr(worker.stylizer, "stylize_stack", buggy)
    with caplog.at_level("ERROR", logger="pipeline.fanout.rows"):
        rows = worker.run_pairs(pairs)
    assert calls == [2, 1, 1]  # the stack, then each pair once on its own
    for row in rows[:2]:
        assert (row["status"], row["retriable"], row["error_type"]) == (
            "failed",
            True,
            "ValueError",
        )
        assert "Traceback" in row["traceback"] and "def buggy" not in row["traceback"]
        assert "in buggy" in row["traceback"]
    assert "failed unexpectedly" in caplog.text and "Traceback" in caplog.text
    bad = rows[2]
    assert (bad["status"], bad["retriable"], bad["error_type"]) == ("failed", False, "ImageError")
    assert bad.get("traceback") is None
    store = ResultStore(str(tmp_path / "out"), "bug")
    store.write_part(rows, "r", 0)  # the new column round-trips through Parquet
    assert store.read().column("traceback").null_count == 1


def test_a_truncated_part_is_named_set_aside_and_its_pairs_redone(tmp_path, caplog):
    images.save_png(make_content(32, 32), tmp_path / "c" / "a.png")
    for i in range(2):
        images.save_png(make_style(32, 32, seed=i), tmp_path / "s" / f"{i}.png")
    spec = {
        "name": "trunc",
        "content": {"source": str(tmp_path / "c")},
        "styles": {"source": str(tmp_path / "s")},
        "params": {"schedule": [[32, 1]]},
        "output": str(tmp_path / "o"),
    }
    plan = make_plan(parse_spec(spec))
    assert run_plan(plan, RunOptions(actors=1)).done == 2
    (part,) = (tmp_path / "o" / "trunc" / "results").iterdir()
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])

    summary = run_plan(plan, RunOptions(actors=1))
    assert (summary.done, summary.skipped, summary.complete) == (2, 0, True)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w for w in warnings if w.startswith(f"{part} is corrupt or truncated")]
    assert (tmp_path / "o" / "trunc" / "corrupt" / part.name).read_bytes() == data[: len(data) // 2]
    table = ResultStore(str(tmp_path / "o"), "trunc").read().to_pandas()
    assert len(table) == 2 and (table.status == "done").all()
    assert run_plan(plan, RunOptions(actors=1)).skipped == 2


def test_a_stream_that_fails_midway_leaves_its_remaining_pairs_to_stacks(tmp_path, monkeypatch):
    """Continuous batching in a worker (converge on, more pairs than one stack): the pairs the
    stream handed out keep their results; when the stream fails (injected after two pairs), the
    rest run as stacks, and every row is done."""
    params = {"schedule": [[32, 30]], "converge": 0.01}
    worker, pairs = _worker_on_files(tmp_path, "stream", 5, stack=2, params=params)
    real = worker.stylizer.stylize_stream
    stacks = []

    def breaks_after_two(contents, styles, *, on_result, **kw):
        handed = []

        def counted(i, outcome):
            on_result(i, outcome)
            handed.append(i)
            if len(handed) == 2:
                raise RuntimeError("device lost (injected)")

        real(contents, styles, on_result=counted, **kw)

    real_stack = worker.stylizer.stylize_stack
    monkeypatch.setattr(worker.stylizer, "stylize_stream", breaks_after_two)
    monkeypatch.setattr(
        worker.stylizer,
        "stylize_stack",
        lambda contents, *a, **kw: stacks.append(len(contents)) or real_stack(contents, *a, **kw),
    )
    rows = worker.run_pairs(pairs)
    assert [r["status"] for r in rows] == ["done"] * 5
    assert stacks == [2, 1]  # the 3 pairs the stream had not handed out
