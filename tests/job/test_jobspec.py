"""Job specs: validation before any compute, and plans with stable pair ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.core.device import pick_precision
from pipeline.io import images
from pipeline.job.dataset_mode import dest_path
from pipeline.job.load import load_spec, parse_spec
from pipeline.job.plan import make_plan
from pipeline.job.spec import SpecError

from ..cli.test_cli import nst
from ..conftest import make_content


def spec_dict(artworks, photos, **changes) -> dict:
    d = {
        "name": "t",
        "content": {"source": str(photos)},
        "styles": {
            "catalog": str(artworks),
            "artists": ["Claude Monet", "Albrecht Dürer"],
            "per_artist": 2,
        },
        "preset": "preview",
        "params": {"style_weight": "1e0", "schedule": [[32, 2]]},
        "output": "runs",
    }
    d.update(changes)
    return d


def test_plan_crosses_contents_and_styles(artworks, photos):
    plan = make_plan(parse_spec(spec_dict(artworks, photos)))
    assert [c.identity for c in plan.contents] == ["a.png", "sub/b.png", "sub/c.jpg"]
    assert len(plan.styles) == 4 and len(plan.pairs) == 12
    assert plan.per_artist() == {"Albrecht Dürer": 6, "Claude Monet": 6}
    assert plan.spec.params.style_weight == 1.0 and plan.spec.params.schedule == ((32, 2),)
    assert len({p.pair_id for p in plan.pairs}) == 12


def test_pair_ids_are_stable_and_depend_on_what_determines_the_result(
    artworks, photos, tmp_path, monkeypatch
):
    d = spec_dict(artworks, photos)
    ids = [p.pair_id for p in make_plan(parse_spec(d)).pairs]
    reordered = dict(reversed(list(d.items())))
    assert [p.pair_id for p in make_plan(parse_spec(reordered)).pairs] == ids
    # The same spec from another directory, with a relative content path: same ids.
    monkeypatch.chdir(photos.parent)
    relative = spec_dict(artworks, photos, content={"source": photos.name})
    assert [p.pair_id for p in make_plan(parse_spec(relative)).pairs] == ids
    changed = spec_dict(artworks, photos, params={"style_weight": 2.0, "schedule": [[32, 2]]})
    assert not set(ids) & {p.pair_id for p in make_plan(parse_spec(changed)).pairs}
    seeded = spec_dict(artworks, photos, params={"seed": 1, "schedule": [[32, 2]]})
    assert not set(ids) & {p.pair_id for p in make_plan(parse_spec(seeded)).pairs}

    # The default layer weights written out: the same ids; any other weights: other ids.
    def weighted(weights: list[float]) -> list[str]:
        d = spec_dict(
            artworks, photos, params={"schedule": [[32, 2]], "style_layer_weights": weights}
        )
        return [p.pair_id for p in make_plan(parse_spec(d)).pairs]

    assert weighted([1, 1, 1, 3, 1]) == ids
    assert not set(ids) & set(weighted([1, 1, 1, 2, 1]))
    # Equal weights (normalized, so [2] * 5 is [1] * 5) were the default before relu4_1 x3: they
    # leave the weights out of the id, as it was then, so those jobs' results keep their ids.
    assert weighted([2] * 5) == weighted([1] * 5)
    assert not set(ids) & set(weighted([1] * 5))


def test_pair_ids_of_the_named_sources_are_those_of_earlier_releases(tmp_path):
    """`demo:` and `coco-val2017:` identities enter every id: these are ids planned before the
    schemes moved into pipeline/io/identities.py, and a committed result keeps its id. They were
    planned with equal style layer weights, strength 0.5 and the presets' schedules of then,
    which the specs here state."""
    equal = {"style_layer_weights": [1] * 5, "strength": 0.5}
    preview = {**equal, "schedule": [[128, 100], [256, 60]]}
    fast = {**equal, "schedule": [[256, 150], [512, 100]]}
    document = yaml.safe_load((Path(__file__).parents[2] / "jobs" / "demo.yaml").read_text())
    demo = make_plan(parse_spec({**document, "params": preview}))
    assert [(p.content.uri, p.style.identity, p.pair_id) for p in demo.pairs] == [
        ("demo:astronaut", "demo:artworks:resized:edvard munch:1", "548be377bf3b1c95c915"),
        ("demo:astronaut", "demo:artworks:resized:vincent van gogh:1", "ef4efd1fd64b4fb67828"),
        ("demo:chelsea", "demo:artworks:resized:edvard munch:1", "ab66da9ee66852735a9f"),
        ("demo:chelsea", "demo:artworks:resized:vincent van gogh:1", "3a166d6a536b8516963c"),
    ]
    for name in ("000000000139.jpg", "000000000285.jpg"):
        images.save_png(make_content(30, 40, seed=1), tmp_path / "val2017" / name)
    coco = {"name": "c", "content": {"source": "coco-val2017", "root": str(tmp_path)}}
    spec = parse_spec(
        {
            **coco,
            "styles": {"catalog": "demo"},
            "dataset": {"styles_per_content": 2},
            "params": fast,
        }
    )
    plan = make_plan(spec)
    assert [(p.content.identity, p.pair_id) for p in plan.pairs[::2]] == [
        ("coco-val2017:000000000139.jpg", "210c3e15ec4c7dee4641"),
        ("coco-val2017:000000000285.jpg", "2c67637efd99632b6f53"),
    ]
    assert dest_path(
        plan.pairs[0].content.identity, plan.pairs[0].style.identity, spec.dataset
    ) == ("val2017/000000000139__edvard_munch_1.jpg")


def test_random_pairing_is_seeded_per_content(artworks, photos):
    d = spec_dict(artworks, photos, pairing={"random": 2, "seed": 4})
    plan = make_plan(parse_spec(d))
    assert len(plan.pairs) == 6
    again = make_plan(parse_spec(d))
    assert plan.pairs == again.pairs
    limited = make_plan(parse_spec({**d, "content": {"source": str(photos), "limit": 1}}))
    first = [p for p in plan.pairs if p.content.identity == "a.png"]
    assert list(limited.pairs) == first


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, r"colour: unknown key"),
        ({"name": "a/b"}, r"name: use letters"),
        ({"content": {"source": "x", "limt": 3}}, r"content.limt: unknown key"),
        (
            {"content": {"source": "x", "limit": "ten"}},
            r"content.limit: must be a valid integer, got 'ten'",
        ),
        ({"content": {"source": "/nonexistent/photos"}}, r"content.source: .*no such folder"),
        ({"preset": "turbo"}, r"preset: unknown preset 'turbo'; known: .*preview"),
        ({"params": {"schedule": [[64, -5]]}}, r"params.schedule: level iterations must be"),
        ({"params": {"optimizer": "sgd"}}, r"params.optimizer: 'sgd' is not one of lbfgs, adam"),
        ({"pairing": "zip"}, r"pairing: must be 'cross'"),
        ({"styles": {"artists": ["Claude Monet"]}}, r"styles: give exactly one of catalog"),
        # The typos that used to pass and then fail inside the actors, or exhaust memory:
        ({"weights": "caffee"}, r"weights: 'caffee' is not caffe, torchvision nor a file"),
        ({"resources": {"device": "gpu"}}, r"resources.device: must be auto, cpu, cuda or cuda:N"),
        ({"params": {"schedule": [[200000, 100]]}}, r"params.schedule: a 200000 px content level"),
        (
            {"params": {"schedule": [[32, 2]], "style_scale": 200.0}},
            r"params.style_scale: a 6400 px style level is up to 40,960,000 px, over the limit "
            r"of 16,777,216 \(resources.max_pixels\)",
        ),
        ({"resources": {"max_pixels": 1000}}, r"params.schedule: a 32 px content level"),
        ({"resources": {"gpus_per_actor": 1.5}}, r"resources.gpus_per_actor: a fraction of one"),
        ({"resources": {"actors": 0}}, r"resources.actors: must be greater than or equal to 1"),
        ({"resources": {"gpus": 1}}, r"resources.gpus: unknown key; allowed: actors, gpus_per"),
        ({"content": {"sourc": "x"}}, r"content.sourc: unknown key; allowed: source, root"),
        ({"pairing": {"random": 0}}, r"pairing.random: must be greater than or equal to 1"),
        ({"preset": "../../etc/x.yaml"}, r"preset: unknown preset '../../etc/x.yaml'"),
        ({"styles": {"source": "x", "years": [1, "y"]}}, r"styles.years.1: must be a valid int"),
    ],
)
def test_bad_specs_name_the_field(artworks, photos, change, message):
    with pytest.raises(SpecError, match=message):
        make_plan(parse_spec(spec_dict(artworks, photos, **change), "job.yaml"))


@pytest.mark.parametrize(
    ("styles", "message"),
    [
        (
            {"artists": ["Claude Monnet"]},
            r"unknown artist 'Claude Monnet'; did you mean Claude Monet",
        ),
        ({"genres": ["Vaporwave"]}, r"select no artist"),
        ({"per_artist": 0}, r"styles.per_artist: must be greater than or equal to 1, got 0"),
    ],
)
def test_bad_style_selections(artworks, photos, styles, message):
    d = spec_dict(artworks, photos)
    d["styles"] = {"catalog": str(artworks), **styles}
    with pytest.raises(SpecError, match=message):
        make_plan(parse_spec(d))


def test_cli_plan_prints_breakdown_and_estimate_and_writes_nothing(artworks, photos, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec_dict(artworks, photos, output=str(tmp_path / "out"))))
    proc = nst("plan", str(job))
    assert proc.returncode == 0, proc.stderr
    assert "contents 3  styles 4  pairs 12" in proc.stdout
    assert "6  Albrecht Dürer" in proc.stdout
    assert "on this machine's CPU" in proc.stdout and "on 1 H100/H200 GPU(s)" in proc.stdout
    expected = pick_precision("auto", torch.device("cpu"))  # the spec leaves precision to auto
    assert f"GFLOP/s measured in {expected})" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_spec_checks_weights_files_here_unless_the_spec_runs_elsewhere(tmp_path):
    d = {"name": "w", "content": {"source": "demo"}, "styles": {"source": "demo"}}
    state_dict = tmp_path / "vgg.pt"
    with pytest.raises(SpecError, match="weights: .*vgg.pt' is not caffe, torchvision nor a file"):
        parse_spec({**d, "weights": str(state_dict)})
    assert parse_spec({**d, "weights": str(state_dict)}, local_files=False).weights
    state_dict.write_bytes(b"checked by the worker")
    assert parse_spec({**d, "weights": str(state_dict)}).weights == str(state_dict)


def test_yaml_syntax_errors_name_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncontent: {source: demo\nstyles: {source: demo}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: line 3, column ") and "not valid YAML" in message
    assert "\n" not in message


def test_cli_bad_spec_is_exit_2_and_one_line(tmp_path):
    proc = nst("plan", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"nst: error: {tmp_path / 'missing.yaml'}: job spec not found"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncontent: {source: demo}\nstyles: {source: demo}\nprest: fast\n")
    proc = nst("plan", str(bad))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "prest: unknown key" in proc.stderr


def test_repository_job_specs_parse():
    jobs = os.path.join(os.path.dirname(__file__), "..", "..", "jobs")
    files = sorted(n for n in os.listdir(jobs) if n.endswith(".yaml"))
    specs = {name: load_spec(os.path.join(jobs, name)) for name in files}
    assert {name: spec.name for name, spec in specs.items()} == {
        "artworks-random-styles.yaml": "photos-x-impressionists",
        "demo.yaml": "demo",
        # The S3 twin writes the same job to a bucket.
        "impressionists-x-coco-val-s3.yaml": "impressionists-x-coco-val",
        "impressionists-x-coco-val.yaml": "impressionists-x-coco-val",
    }
    assert specs["impressionists-x-coco-val-s3.yaml"].output.startswith("s3://")
    assert len(make_plan(load_spec(os.path.join(jobs, "demo.yaml"))).pairs) == 4


def test_masks_are_found_by_content_path_and_enter_the_pair_ids(artworks, photos, tmp_path):
    """`content.masks`: same relative path, any suffix; a missing one fails, is skipped or
    styles the whole content; the mask and how it is read change the ids."""
    masks = tmp_path / "masks"
    (masks / "sub").mkdir(parents=True)
    (masks / "a.jpg").write_bytes(b"")  # found by name only: nothing is read while planning
    (masks / "sub" / "c.png").write_bytes(b"")
    d = spec_dict(artworks, photos)
    plain = make_plan(parse_spec(d))
    ids = {}
    for missing in ("fail", "whole", "skip"):
        content = {"source": str(photos), "masks": {"source": str(masks), "missing": missing}}
        plan = make_plan(parse_spec({**d, "content": content}))
        by_content = {p.content.identity: p.mask for p in plan.pairs}
        ids[missing] = {p.pair_id for p in plan.pairs}
        assert by_content.get("a.png").identity == "a.jpg"
        assert by_content.get("sub/c.jpg").identity == "sub/c.png"
        assert ("sub/b.png" in by_content) == (missing != "skip")
        assert by_content.get("sub/b.png") is None
    assert len(ids["fail"]) == len(plain.pairs) == 12 and len(ids["skip"]) == 8
    assert ids["skip"] < ids["fail"] and not ids["fail"] & {p.pair_id for p in plain.pairs}
    assert ids["whole"] - ids["skip"] != ids["fail"] - ids["skip"]  # missing policy counts too
    inverted = {"source": str(masks), "invert": True}
    flipped = make_plan(parse_spec({**d, "content": {"source": str(photos), "masks": inverted}}))
    assert not {p.pair_id for p in flipped.pairs} & ids["fail"]

    (masks / "a.png").write_bytes(b"")
    with pytest.raises(SpecError, match=r"content.masks: a.jpg and a.png are both masks of a"):
        make_plan(parse_spec({**d, "content": {"source": str(photos), "masks": str(masks)}}))


@pytest.mark.parametrize(
    ("masks", "error"),
    [
        ({"source": "m", "regions": "#ff0000=2"}, r"content.masks.regions: #ff0000=2: a job's"),
        ({"source": "m", "regions": "red"}, r"content.masks.regions: expected #RRGGBB=N"),
        (
            {"source": "m", "regions": ",".join(f"#{i:06x}=1" for i in range(17))},
            r"content.masks.regions: at most 16 colours; got 17",
        ),
        ({"source": "m", "regions": "#ffffff=1", "invert": True}, r"content.masks.invert: "),
        ({"source": "m", "missing": "drop"}, r"content.masks.missing: must be 'fail', 'skip'"),
        ({"source": "m", "regoins": "x"}, r"content.masks.regoins: unknown key; allowed: source"),
        ("/nonexistent/masks", r"content.masks.source: /nonexistent/masks: no such folder"),
    ],
)
def test_bad_mask_settings_are_one_line_naming_the_field(artworks, photos, masks, error):
    d = spec_dict(artworks, photos, content={"source": str(photos), "masks": masks})
    with pytest.raises(SpecError, match=error):
        make_plan(parse_spec(d, source="job.yaml"))
