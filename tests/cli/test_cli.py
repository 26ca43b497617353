"""The command line, run as a user would: a real process, real files."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import torch

from pipeline.core.params import COLOR_MODES, OPTIMIZERS
from pipeline.io import images

from ..conftest import free_port, make_content, make_style
from ..conftest import run_nst as nst


def test_help_lists_choices_and_defaults():
    out = nst("stylize", "--help").stdout
    for choice in OPTIMIZERS + COLOR_MODES:
        assert choice in out
    assert "--style-blend" in out and "(default: fast)" in out


def test_stylize_writes_png_and_metadata(tmp_path):
    images.save_png(make_content(), tmp_path / "c.png")
    images.save_png(make_style(seed=1), tmp_path / "s1.png")
    images.save_png(make_style(seed=2), tmp_path / "s2.png")
    out = tmp_path / "out" / "r.png"
    proc = nst(
        "stylize",
        str(tmp_path / "c.png"),
        str(tmp_path / "s1.png"),
        str(tmp_path / "s2.png"),
        "--style-blend",
        "0.7,0.3",
        "--schedule",
        "32:3,48:2",
        "--color",
        "luminance",
        "--seed",
        "3",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert images.load(out).shape == (3, 36, 48)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["iterations"] == 5 and len(meta["trace"]) == 5
    assert meta["params"]["color"] == "luminance" and meta["style_blend"] == [0.7, 0.3]
    assert "level 2/2" in proc.stderr  # the progress bar shows the losses


def test_bad_input_is_one_clear_line(tmp_path):
    (tmp_path / "c.jpg").write_text("not an image")
    images.save_png(make_style(), tmp_path / "s.png")
    proc = nst(
        "stylize", str(tmp_path / "c.jpg"), str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png")
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"nst: error: {tmp_path / 'c.jpg'}: not an image "
        "(unrecognized or empty file)"
    )
    proc = nst("stylize", "a", "b", "-o", "o.png", "--preset", "nope")
    assert proc.returncode == 2 and "unknown preset 'nope'" in proc.stderr
    # Options with a shape of their own say what is wrong, not only that the value is invalid.
    proc = nst("stylize", "a", "b", "-o", "o.png", "--style-layer-weights", "1,2")
    assert proc.returncode == 2 and "needs one weight per layer" in proc.stderr
    proc = nst("stylize", "a", "b", "-o", "o.png", "--schedule", "8:10")
    assert proc.returncode == 2 and "level size must be an integer >= 16" in proc.stderr


def test_stylize_with_a_colour_keyed_mask_keeps_the_photo_and_records_it(tmp_path):
    """Two styles by a red/blue mask at twice the content's size, a black band kept as the photo;
    then a mask of another aspect: exit 2, one line naming the mask file."""
    images.save_png(make_content(), tmp_path / "c.png")
    images.save_png(make_style(seed=1), tmp_path / "s1.png")
    images.save_png(make_style(seed=2), tmp_path / "s2.png")
    mask = torch.zeros(3, 96, 128)
    mask[0, :, 48:88] = 1  # red: style 1
    mask[2, :, 88:] = 1  # blue: style 2; black (columns 0-47): the photo
    images.save_png(mask, tmp_path / "m.png")
    out = tmp_path / "r.png"
    args = [str(tmp_path / n) for n in ("c.png", "s1.png", "s2.png")]
    regions = "#ff0000=1,#0000ff=2,#000000=none"
    proc = nst(
        "stylize",
        *args,
        "--mask",
        str(tmp_path / "m.png"),
        "--mask-regions",
        regions,
        "--schedule",
        "48:8",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = images.load(out)
    photo = images.load(tmp_path / "c.png", max_side=48)
    change = (result - photo).abs().mean(0)
    # The PNG rounds to 8 bits: the kept band (left of col 18 of 48, feather 1 px) within that.
    assert float(change[:, :16].max()) <= 1 / 255 and float(change[:, 20:].mean()) > 0.02
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["params"]["mask"] == {"uri": str(tmp_path / "m.png"), "regions": regions}

    images.save_png(torch.ones(3, 64, 64), tmp_path / "square.png")
    proc = nst("stylize", *args[:2], "--mask", str(tmp_path / "square.png"), "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"nst: error: {tmp_path / 'square.png'}: aspect ratio (width/height) 1.000 differs "
        "from the content's 1.333; a mask may differ from its content in scale only"
    )


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket these processes listen on, from /proc."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)  # 32-bit words in the machine's (little) order
                ip = ipaddress.ip_address(
                    b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                )
                found.add((str(getattr(ip, "ipv4_mapped", None) or ip), int(port, 16)))
    return found


def test_the_local_ray_of_nst_serve_listens_on_loopback_only():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None and time.time() < deadline, "nst serve did not start"
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"http://127.0.0.1:{port}/api/config", timeout=5).ok:
                    break
            time.sleep(1)
        sockets: set[tuple[str, int]] = set()
        for _ in range(5):  # Ray's agents open their ports while the actor starts
            sockets |= _listening(_descendants(proc.pid))
            time.sleep(1)
        assert ("127.0.0.1", port) in sockets and len(sockets) > 3  # the server, GCS, raylet, ...
        exposed = {s for s in sockets if not ipaddress.ip_address(s[0]).is_loopback}
        assert not exposed, f"listening beyond loopback: {sorted(exposed)}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_run_and_submit_take_the_same_run_options_and_submit_passes_them_on():
    from pipeline.cli.parser import build_parser
    from pipeline.cli.run_options import run_argv, run_overrides

    parser = build_parser()
    given = ["--output", "s3://b/p", "--actors", "3", "--gpus-per-actor", "0.5", "--force"]
    given += ["--commit-every", "8"]
    submitted = parser.parse_args(["submit", "job.yaml", *given, "--address", "http://h:8265"])
    argv = run_argv(submitted)  # what the cluster's `nst run` gets; defaults left out
    assert argv == ["--output", "s3://b/p", "--actors", "3", "--gpus-per-actor", "0.5"] + [
        "--force",
        "--commit-every",
        "8",
    ]
    ran = parser.parse_args(["run", "job.yaml", *argv])
    assert run_overrides(ran) == run_overrides(submitted)
    assert run_argv(parser.parse_args(["submit", "job.yaml"])) == []
