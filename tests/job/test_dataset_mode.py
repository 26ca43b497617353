"""Dataset mode: a mirrored, stylized tree, a mapping table, resume, and the MMD figure."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.fanout.runner import run_plan
from pipeline.io import images
from pipeline.job.dataset_mode import DatasetSpec, UnsafePath, dest_path
from pipeline.job.load import parse_spec
from pipeline.job.options import RunOptions
from pipeline.job.plan import make_plan
from pipeline.job.spec import SpecError

from ..conftest import make_content, make_style, run_nst

pytestmark = pytest.mark.usefixtures("ray_module")


@pytest.fixture
def tree(tmp_path) -> Path:
    """Contents in subfolders with mixed extensions and aspect ratios."""
    root = tmp_path / "coco"
    images.save_png(make_content(40, 56, seed=1), root / "train" / "0001.png")
    (root / "train" / "sub").mkdir()
    images.to_pil(make_content(48, 36, seed=2)).save(root / "train" / "sub" / "0002.jpg")
    (root / "val").mkdir()
    images.to_pil(make_content(44, 44, seed=3)).save(root / "val" / "0003.jpeg")
    return root


@pytest.fixture
def styles(tmp_path) -> Path:
    for i in range(3):
        images.save_png(make_style(40, 40, seed=i), tmp_path / "styles" / f"paint{i}.png")
    return tmp_path / "styles"


def _spec(tree, styles, out, **dataset) -> dict:
    return {
        "name": "stylized",
        "content": {"source": str(tree)},
        "styles": {"source": str(styles)},
        "params": {"schedule": [[32, 2]]},
        "output": str(out),
        "dataset": {"size": 32, **dataset},
    }


def test_mirrored_tree_with_two_styles_each_then_a_rerun_computes_nothing(tree, styles, tmp_path):
    plan = make_plan(parse_spec(_spec(tree, styles, tmp_path / "out", styles_per_content=2)))
    assert len(plan.pairs) == 6
    summary = run_plan(plan, RunOptions(actors=1))
    assert (summary.done, summary.failed, summary.complete) == (6, 0, True)

    out = tmp_path / "out" / "stylized" / "dataset"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    stems = {"train/0001", "train/sub/0002", "val/0003"}
    assert len(files) == 6 and all(f.endswith(".jpg") for f in files)
    for stem in stems:
        mine = [f for f in files if f.startswith(stem + "__paint")]
        assert len(mine) == 2, files
    for f in files:
        assert min(Image.open(out / f).size) == 32  # shorter side scaled to N

    mapping = pd.read_parquet(tmp_path / "out" / "stylized" / "mapping.parquet")
    assert sorted(mapping.dataset_path) == files
    inputs = pd.DataFrame({"content_id": ["train/0001.png", "train/sub/0002.jpg", "val/0003.jpeg"]})
    joined = inputs.merge(mapping, on="content_id")
    assert len(joined) == 6 and joined.style_id.str.startswith("paint").all()
    assert (joined.loss_total > 0).all()
    results = pd.read_parquet(tmp_path / "out" / "stylized" / "results")
    ran = results[results.content_id == "train/0001.png"].params.map(json.loads)
    assert all(p["schedule"] == [[45, 2]] for p in ran)  # 40x56 with its shorter side at 32

    again = run_plan(plan, RunOptions(actors=1))
    assert (again.ran, again.skipped) == (0, 6)
    assert not (tmp_path / "out" / "stylized" / "images").exists()  # only the mirrored tree


def test_crop_png_and_keep_policies(tree, styles, tmp_path):
    crop = make_plan(
        parse_spec(_spec(tree, styles, tmp_path / "a", format="png", size_policy="crop"))
    )
    assert run_plan(crop, RunOptions(actors=1)).done == 3
    out = tmp_path / "a" / "stylized" / "dataset"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "train/0001.png",
        "train/sub/0002.png",
        "val/0003.png",
    ]
    assert all(Image.open(p).size == (32, 32) for p in out.rglob("*.png"))

    keep = make_plan(
        parse_spec(_spec(tree, styles, tmp_path / "b", size_policy="keep", quality=95))
    )
    assert run_plan(keep, RunOptions(actors=1)).done == 3
    out = tmp_path / "b" / "stylized" / "dataset"
    assert Image.open(out / "train" / "0001.jpg").size == (56, 40)  # the original size
    assert Image.open(out / "train" / "sub" / "0002.jpg").size == (36, 48)


def test_unsafe_relative_paths_are_refused():
    spec = DatasetSpec(styles_per_content=2)
    assert (
        dest_path("coco-val2017:000000000139.jpg", "artworks:resized:claude monet:12", spec)
        == "val2017/000000000139__claude_monet_12.jpg"
    )
    assert {
        dest_path("demo:chelsea", f"demo:artworks:resized:{artist}:1", spec)
        for artist in ("vincent van gogh", "edvard munch")
    } == {"chelsea__vincent_van_gogh_1.jpg", "chelsea__edvard_munch_1.jpg"}
    for bad in ("../x.jpg", "/etc/passwd", "a/../../b.jpg", "a\\b.jpg", "a//b.jpg"):
        with pytest.raises(UnsafePath):
            dest_path(bad, "s.png", spec)


def test_two_inputs_for_one_output_are_refused_at_plan_time(tree, styles, tmp_path):
    """`x.jpg` and `x.png` would both become `x.jpg`: exit 2 naming both, nothing computed."""
    images.to_pil(make_content(40, 40, seed=9)).save(tree / "train" / "0001.jpg")
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps(_spec(tree, styles, tmp_path / "out")))
    proc = run_nst("plan", str(spec))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"nst: error: {spec}: dataset: train/0001.jpg and train/0001.png would both be "
        "written to train/0001.jpg; rename one of them"
    ]


def test_styles_of_one_name_in_two_folders_get_distinct_outputs(tree, tmp_path):
    for i, artist in enumerate(("monet", "degas")):
        images.save_png(make_style(40, 40, seed=i), tmp_path / "st" / artist / "water.png")
    plan = make_plan(parse_spec(_spec(tree, tmp_path / "st", tmp_path / "o", styles_per_content=2)))
    spec = plan.spec.dataset
    dests = {dest_path(p.content.identity, p.style.identity, spec) for p in plan.pairs}
    assert len(dests) == len(plan.pairs) == 6
    assert "val/0003__monet_water.jpg" in dests and "val/0003__degas_water.jpg" in dests


def test_no_aspect_ratio_makes_a_level_larger_than_max_pixels():
    """A 16 x 4000 px strip under `shorter` 512 would need a 128,000 px long side."""
    from pipeline.core.params import StyleParams
    from pipeline.job.dataset_mode import prepare

    strip = torch.rand(3, 16, 4000)
    spec, params = DatasetSpec(size=512), StyleParams(schedule=((256, 10), (512, 5)))
    for limit, style_scale in ((16_777_216, 1.0), (1_000_000, 1.0), (1_000_000, 2.0)):
        _, ran, _ = prepare(strip, spec, params.replace(style_scale=style_scale), limit)
        for side, _ in ran.schedule:
            assert side * side * 16 / 4000 <= limit  # the content level: long x short
            assert (side * style_scale) ** 2 <= limit  # the style, square at worst
    _, usual, _ = prepare(torch.rand(3, 300, 400), spec, params, 16_777_216)
    assert usual.schedule[-1] == (683, 5)  # an ordinary photo: shorter side 512 as before


def test_dataset_spec_validation():
    base = {"name": "d", "content": {"source": "demo"}, "styles": {"source": "demo"}}
    for dataset, message in (
        ({"format": "gif"}, "dataset.format"),
        ({"size_policy": "fit"}, "dataset.size_policy"),
        ({"quality": 101}, "dataset.quality"),
        ({"styles_per_content": 0}, "dataset.styles_per_content"),
        ({"colour": 1}, "dataset.colour"),
    ):
        with pytest.raises(SpecError, match=message):
            parse_spec({**base, "dataset": dataset})
    with pytest.raises(SpecError, match="pairing: not used in dataset mode"):
        parse_spec({**base, "dataset": {}, "pairing": "cross"})


def test_report_mmd_of_outputs_is_lower_than_of_the_contents(tmp_path):
    """A small real example: four photos stylized with the mini catalogue's two paintings."""
    import skimage.data

    photos = tmp_path / "photos"
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        array = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
        images.save_png(array, photos / f"{name}.png")
    spec = {
        "name": "art",
        "content": {"source": str(photos)},
        "styles": {"catalog": "demo", "artists": ["Vincent van Gogh", "Edvard Munch"]},
        "params": {"schedule": [[64, 40]]},
        "output": str(tmp_path / "out"),
        "dataset": {"size": 64, "styles_per_content": 2},
    }
    summary = run_plan(make_plan(parse_spec(spec)), RunOptions(actors=1))
    assert summary.done == 8
    proc = run_nst("report", str(tmp_path / "out" / "art"), "--allow-source", str(photos))
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((tmp_path / "out" / "art" / "report" / "domain.json").read_text())
    assert figures["outputs"] == 8 and figures["paintings"] == 2
    assert len(list((tmp_path / "out" / "art" / "dataset").glob("*.jpg"))) == 8
    assert figures["mmd2_outputs_to_paintings"] < figures["mmd2_contents_to_paintings"]
    html = (tmp_path / "out" / "art" / "report" / "index.html").read_text()
    assert "Distance to the art domain" in html
