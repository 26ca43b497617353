"""The Ray Data stage (pipeline/fanout/stage.py): the README's example on a real local Ray Data
pipeline, its rows against `nst run`'s on the same pairs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipeline
from pipeline.io import images
from pipeline.io.schema import RESULT_COLUMNS

from ..conftest import make_content, make_style, small_card

pytestmark = pytest.mark.usefixtures("ray_module")

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### A stage of a Ray Data pipeline") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_pipeline_matches_nst_run_on_the_same_pairs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images.save_png(make_content(40, 56, seed=1), tmp_path / "photos" / "a.png")
    images.save_png(make_content(48, 36, seed=2), tmp_path / "photos" / "b.png")
    exec(compile(readme_example(), "README.md", "exec"), {})
    stage = pd.read_parquet(tmp_path / "stylized")
    assert len(stage) == 4 and set(stage.status) == {"done"}
    assert {Path(p).name for p in stage.path} == {"a.png", "b.png"}

    summary = pipeline.run_job(
        {
            "name": "same",
            "content": {"source": str(tmp_path / "photos")},
            "styles": {"catalog": "demo", "artists": ["Edvard Munch", "Vincent van Gogh"]},
            "params": {"schedule": [[32, 4]]},
            "output": str(tmp_path / "runs"),
            "resources": {"actors": 1, "device": "cpu"},
        }
    )
    assert summary.done == 4
    job = pd.read_parquet(tmp_path / "runs" / "same" / "results")
    job["key"] = job.content_id + " x " + job.style_id.str.removeprefix("demo:")
    stage["key"] = stage.path.map(lambda p: Path(p).name) + " x " + stage.painting
    both = stage.merge(job, on="key", suffixes=("", "_job"))
    assert len(both) == 4
    for _, row in both.iterrows():
        # Pairs stacked differently (the stage's batches, the actor's) round differently:
        # the README's tolerance for a batch against a pair alone.
        assert row.loss_total == pytest.approx(row.loss_total_job, rel=0.02)
        assert row.gram_error_relu1_1 == pytest.approx(row.gram_error_relu1_1_job, rel=0.1)
        stylized = np.asarray(row.stylized)
        assert stylized.dtype == np.uint8 and stylized.shape[:2] == (row.height, row.width)


def test_a_bad_row_fails_alone(ray_module):
    import ray

    good = (make_content(32, 40).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    style = (make_style(32, 32).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    rows = [
        {"image": good, "style": style},
        {"image": good[:8, :8], "style": style},  # under VGG-19's 16 px
    ]
    out = (
        ray.data.from_items(rows)
        .map_batches(
            pipeline.RayDataStylizer,
            fn_constructor_kwargs={"params": {"schedule": [[32, 2]]}, "device": "cpu"},
            batch_size=2,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0.5,
        )
        .take_all()
    )
    assert [r["status"] for r in out] == ["done", "failed"]
    assert "too small" in out[1]["error"] and out[1]["error_type"] == "ImageError"
    # every column of the results table that a result fills (RESULT_COLUMNS), and filled
    assert all(out[0][c] is not None for c in RESULT_COLUMNS)
    assert out[0]["loss_total"] > 0 and out[0]["stylized"].shape == (26, 32, 3)  # long side 32


def test_with_convergence_the_rows_stream_through_one_stacks_slots(monkeypatch):
    """`converge` on and more rows of one size than a stack: the rows run as a stream (a pair
    that stops leaves its slot to the next), each coming out about as it does alone."""
    from pipeline.core.engine import Stylizer

    slots_used = []
    stream = Stylizer.stylize_stream

    def spy(self, *args, **kwargs):
        slots_used.append(kwargs["slots"])
        return stream(self, *args, **kwargs)

    monkeypatch.setattr(Stylizer, "stylize_stream", spy)
    # At the default strength these pairs stop alone after 34-42 of the 60 iterations.
    params = {"schedule": [[32, 60]], "converge": 0.05, "converge_window": 5, "precision": "fp32"}
    stage = pipeline.RayDataStylizer(params=params, device="cpu", stack=2)
    photos = [make_content(32, 32, seed=s) for s in range(5)]
    style = make_style(32, 32)
    pixels = [(p.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for p in photos]
    style_pixels = (style.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = stage({"image": pixels, "style": [style_pixels] * 5})
    assert slots_used == [2]
    assert out["status"] == ["done"] * 5
    for i, content in enumerate(pixels):
        alone = stage.stylizer.stylize(
            images.from_array(content, name="alone"),
            [images.from_array(style_pixels, name="style")],
            params=stage.params,
        )
        # A stack rounds otherwise than a pair alone, and L-BFGS magnifies it (RESULTS.md,
        # Continuous batching): about where it stops alone, at about its loss.
        assert abs(out["iterations"][i] - alone.iterations) <= 2 * 5
        assert out["loss_total"][i] == pytest.approx(alone.losses.total, rel=0.05)
    assert min(out["iterations"]) < 60  # some stopped early and left their slot

    with pytest.raises(ValueError, match="stack"):
        pipeline.RayDataStylizer(params=params, device="cpu", stack=0)


def test_a_stack_out_of_gpu_memory_is_halved_and_every_row_is_done(monkeypatch):
    """Fault injection (no GPU here), as the worker's test does it: the engine raises CUDA's
    out-of-memory error for any stack of more than one pair. A Ray Data batch of 4 rows with a
    stack of 4 is halved down to single pairs and every row is done, not the batch failed."""
    stage = pipeline.RayDataStylizer(params={"schedule": [[32, 2]]}, device="cpu", stack=4)
    sizes: list[int] = []
    small_card(stage.stylizer, monkeypatch, sizes)
    photos = [make_content(32, 40, seed=s) for s in range(4)]
    pixels = [(p.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for p in photos]
    style = (make_style(32, 32).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = stage({"image": pixels, "style": [style] * 4})
    assert out["status"] == ["done"] * 4
    assert sizes == [4, 2, 1, 1, 2, 1, 1]
    assert all(s.shape == (26, 32, 3) for s in out["stylized"])


def test_the_old_name_still_answers_until_its_release():
    with pytest.warns(DeprecationWarning, match="RayDataStylizer.*0.3.0"):
        assert pipeline.StyleTransfer is pipeline.RayDataStylizer
