"""The command line, run as a user would: a real process, real files."""

from __future__ import annotations

import json

from pipeline import images
from pipeline.core.params import COLOR_MODES, OPTIMIZERS

from .conftest import make_content, make_style
from .conftest import run_nst as nst


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
