"""The Gatys optimization on tiny images: it must really stylize, repeatably."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.core import color, losses
from pipeline.core.device import pick_precision
from pipeline.core.engine import StylizeError, Stylizer
from pipeline.core.measure import objective
from pipeline.core.network import STYLE_LAYERS
from pipeline.core.params import ParamError, StyleParams
from pipeline.core.sizes import fit, resize
from pipeline.job.presets import DEFAULT_PRESET, load_preset

from ..conftest import make_content, make_style, tiny


def test_total_loss_falls_and_trace_is_complete(stylizer, content, style):
    result = stylizer.stylize(content, [style], params=tiny(schedule=((48, 10),)))
    totals = [t.losses.total for t in result.trace]
    assert len(result.trace) == 10 and result.iterations == 10
    assert result.losses.total < 0.5 * totals[0]
    assert result.image.shape == (3, 36, 48)  # 48x64 content, long side 48
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    assert result.device == "cpu" and result.weights == "caffe"
    assert result.params["schedule"] == [[48, 10]]


def test_the_record_is_the_result_as_plain_data(stylizer, content, style):
    result = stylizer.stylize(content, [style], params=tiny(schedule=((32, 2),)))
    record = result.record()
    assert json.loads(json.dumps(record)) == record  # what the CLI writes, and Ray sends
    assert record["losses"]["total"] == result.losses.total
    assert record["trace"] == result.trace_records() and len(record["trace"]) == 2
    assert set(record["quality"]) == {"content", *STYLE_LAYERS}


def test_style_distance_falls_well_below_the_contents_own(stylizer, content, style):
    result = stylizer.stylize(content, [style], params=tiny(schedule=((48, 30),)))
    _, before = stylizer.distances(content, content, [style])
    _, after = stylizer.distances(result.image, content, [style])
    assert after < 0.2 * before


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_seeded_run_repeats_exactly(stylizer, content, style, optimizer):
    params = tiny(init="noise", optimizer=optimizer, seed=7, schedule=((32, 5),))
    a = stylizer.stylize(content, [style], params=params)
    b = stylizer.stylize(content, [style], params=params)
    c = stylizer.stylize(content, [style], params=params.replace(seed=8))
    assert torch.equal(a.image, b.image)
    assert [t.losses for t in a.trace] == [t.losses for t in b.trace]
    assert not torch.equal(a.image, c.image)


def test_multiscale_returns_requested_size_and_traces_every_level(stylizer, content, style):
    params = tiny(schedule=((24, 3), (40, 2), (64, 2)))
    result = stylizer.stylize(content, [style], params=params)
    assert result.image.shape == (3, 48, 64)
    assert [t.size for t in result.trace] == [24] * 3 + [40] * 2 + [64] * 2
    assert [t.iteration for t in result.trace] == list(range(1, 8))


def _mean_chroma(image: torch.Tensor) -> torch.Tensor:
    return color.rgb_to_yiq(image.unsqueeze(0))[0, 1:].mean((1, 2))


@pytest.mark.parametrize("mode", ["luminance", "histogram"])
def test_color_preservation_keeps_the_contents_mean_color(stylizer, content, mode):
    style = make_style() * torch.tensor([1.0, 0.2, 0.4]).view(3, 1, 1)  # a red-purple painting
    params = tiny(schedule=((48, 15),))
    plain = stylizer.stylize(content, [style], params=params)
    kept = stylizer.stylize(content, [style], params=params.replace(color=mode))
    small = torch.nn.functional.interpolate(content[None], size=(36, 48), mode="area")[0]
    drift_plain = (_mean_chroma(plain.image) - _mean_chroma(small)).abs().max()
    drift_kept = (_mean_chroma(kept.image) - _mean_chroma(small)).abs().max()
    assert drift_kept < 0.02
    assert drift_kept < 0.5 * drift_plain
    # The mean RGB stays close too, not only the chroma.
    assert (kept.image.mean((1, 2)) - small.mean((1, 2))).abs().max() < 0.06


def test_style_targets_are_computed_once_per_style(stylizer, style):
    # fp32: the quality measure reuses the optimization's targets (another precision fetches its
    # own fp32 ones, from the same cache)
    params = tiny(schedule=((32, 2),), precision="fp32")
    stylizer.stylize(make_content(seed=1), [style], params=params)
    hits = stylizer.target_hits
    stylizer.stylize(make_content(seed=2), [style], params=params)
    assert stylizer.target_hits == hits + 1


def test_blend_of_two_styles_lies_between_them(stylizer, content):
    a, b = make_style(seed=1), torch.rot90(make_style(seed=2), 1, (1, 2))
    params = tiny(schedule=((48, 20),))
    mix = stylizer.stylize(content, [a, b], params=params, style_blend=[3, 1]).image
    only_a = stylizer.stylize(content, [a], params=params).image
    _, mix_to_b = stylizer.distances(mix, content, [b])
    _, a_to_b = stylizer.distances(only_a, content, [b])
    assert mix_to_b < a_to_b


def test_init_image_and_style_scale(stylizer, content, style):
    start = torch.full_like(content, 0.5)
    params = tiny(init="image", style_scale=0.5, schedule=((48, 2),))
    result = stylizer.stylize(content, [style], params=params, init_image=start)
    assert result.image.shape == (3, 36, 48)
    with pytest.raises(ParamError, match="init"):
        stylizer.stylize(content, [style], params=params)


def test_non_finite_loss_is_a_clear_error(stylizer, content, style):
    with pytest.raises(StylizeError, match="loss: became"):
        stylizer.stylize(content, [style], params=tiny(style_weight=1e39, schedule=((32, 2),)))


def test_too_small_for_vgg_is_refused(stylizer, style):
    with pytest.raises(StylizeError, match="at least 16 px"):
        stylizer.stylize(make_content(h=20, w=200), [style], params=tiny(schedule=((64, 1),)))


def test_bad_arguments_name_the_field(stylizer, content, style):
    with pytest.raises(ParamError, match="style_blend"):
        stylizer.stylize(content, [style], params=tiny(), style_blend=[1, 2])
    with pytest.raises(ParamError, match="styles"):
        stylizer.stylize(content, [], params=tiny())


# -- bf16: a speed lever, held to the fp32 path ------------------------------------------------


def test_bf16_features_match_fp32_within_one_percent(stylizer, content):
    """Tolerance of the network in bf16: every tap and its Gram within 1 % (relative L2) of
    fp32's. The Grams and losses are float32 either way (with the CPU's default `bf16_grams`
    the style taps reach `losses.gram` in bf16)."""
    x = content.unsqueeze(0)
    features = stylizer.network.features
    fp32, bf16 = features(x, "max", "fp32"), features(x, "max", "bf16")
    for name, a in fp32.items():
        b = bf16[name]
        assert float((a - b.float()).norm() / a.norm()) < 0.01, name
        ga, gb = losses.gram(a), losses.gram(b)
        assert gb.dtype == torch.float32
        assert float((ga - gb).norm() / ga.norm()) < 0.01, name


def test_bf16_stylizes_as_well_as_fp32(stylizer, content, style):
    """Tolerance of a whole run: L-BFGS trajectories part after a few steps, so the pixels differ;
    what must hold is the quality. Both distances, measured in fp32, within 10 % of the fp32
    run's."""
    runs = {
        p: stylizer.stylize(content, [style], params=tiny(schedule=((48, 30),), precision=p))
        for p in ("fp32", "bf16")
    }
    assert runs["bf16"].params["precision"] == "bf16"  # the result records what ran
    (c32, s32), (c16, s16) = (stylizer.distances(runs[p].image, content, [style]) for p in runs)
    assert abs(c16 - c32) <= 0.1 * c32
    assert abs(s16 - s32) <= 0.1 * s32


def test_auto_precision_resolves_by_device(stylizer, content, style):
    result = stylizer.stylize(content, [style], params=tiny(schedule=((32, 1),)))
    assert result.params["precision"] == pick_precision("auto", torch.device("cpu"))
    assert pick_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(ParamError, match="precision"):
        tiny(precision="fp16")


# -- several pairs per optimization ------------------------------------------------------------


def test_each_pair_of_a_stack_comes_out_as_it_does_alone(stylizer):
    """Three pairs (different contents and styles) in one optimization against each run alone,
    fp32, two levels. Tolerance: every pixel within 1e-2 and the final loss within 0.5 %, not
    exact: L-BFGS amplifies float rounding, since convolutions of 3 images sum in another order
    than of 1, and the gap grows with iterations. Which pair it reaches moves with the objective:
    at the default strength 0.6 one pair is off by 0.0066 a pixel and 0.2 % of its loss, the
    others bit-identical; at 0.5 another pair by 0.0032 and 0.02 %."""
    contents = [make_content(seed=s) for s in (1, 2, 3)]
    styles = [make_style(seed=s) for s in (4, 5, 6)]
    params = tiny(schedule=((32, 4), (48, 4)), precision="fp32")
    stack = stylizer.stylize_stack(contents, [[s] for s in styles], params=params)
    for c, s, together in zip(contents, styles, stack, strict=True):
        alone = stylizer.stylize(c, [s], params=params)
        assert together.stack == 3 and alone.stack == 1
        assert together.image.shape == alone.image.shape == (3, 36, 48)
        assert float((together.image - alone.image).abs().max()) < 1e-2
        assert abs(together.losses.total - alone.losses.total) < 5e-3 * alone.losses.total
        assert len(together.trace) == len(alone.trace) == 8


def test_a_pairs_result_does_not_depend_on_its_stack_mates(stylizer, content, style):
    """The same pair beside two different mates: bit-identical. (Against the same pair alone
    the result differs by rounding, as the test above bounds: the stack size picks the
    convolution kernels.)"""
    params = tiny(schedule=((32, 4), (48, 4)), precision="fp32")
    mates = ([make_content(seed=7)], [torch.rot90(make_content(seed=8), 2, (1, 2))])
    first, second = (
        stylizer.stylize_stack([content, *m], [[style], [make_style(seed=9)]], params=params)[0]
        for m in mates
    )
    assert torch.equal(first.image, second.image)
    assert first.losses == second.losses


def test_a_pair_whose_loss_turns_non_finite_fails_alone(stylizer, content, style):
    poisoned = style.clone()
    poisoned[:, :8, :8] = float("nan")
    params = tiny(schedule=((32, 3),))
    out = stylizer.stylize_stack(
        [content, make_content(seed=5)], [[poisoned], [style]], params=params
    )
    assert isinstance(out[0], StylizeError)
    assert str(out[0]).startswith("loss: became nan at level 1")
    assert not isinstance(out[1], StylizeError) and torch.isfinite(out[1].image).all()


def test_a_stack_needs_equal_working_sizes(stylizer, style):
    with pytest.raises(ParamError, match="equal working sizes"):
        stylizer.stylize_stack(
            [make_content(48, 64), make_content(64, 48)], [[style], [style]], params=tiny()
        )


def test_the_loop_reads_nothing_back_per_iteration(stylizer, content, style, monkeypatch):
    """On a GPU every read of a device value on the host (float(), .item(), bool(), .cpu())
    drains the queue. Counted here on the CPU: the same number of reads for 3 and for 12
    iterations, so none of them is per iteration."""
    reads = {"n": 0}
    for name in ("item", "cpu", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **kw):
            reads["n"] += 1
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def count(iterations: int) -> int:
        reads["n"] = 0
        stylizer.stylize(content, [style], params=tiny(schedule=((32, iterations),)))
        return reads["n"]

    few = count(3)
    assert count(12) == few


def test_channels_last_stylizes_as_the_plain_path(content, style):
    """A GPU lever that also runs on the CPU: the network in channels_last memory format. Same
    tolerance as bf16: both distances within 10 % of the plain path's (on a GPU too:
    tests/benchmarks/RESULTS.md, GPU check on an NVIDIA H200). CUDA graphs run only on a GPU, where
    gpu_check.py holds them to the same tolerance; their static L-BFGS mode is tested in
    tests/core/test_lbfgs.py."""
    params = tiny(schedule=((48, 20),), precision="fp32")
    plain = Stylizer(device="cpu", channels_last=False)
    nhwc = Stylizer(device="cpu", channels_last=True)
    a = plain.stylize(content, [style], params=params)
    b = nhwc.stylize(content, [style], params=params)
    (ca, sa), (cb, sb) = (plain.distances(r.image, content, [style]) for r in (a, b))
    assert abs(cb - ca) <= 0.1 * ca and abs(sb - sa) <= 0.1 * sa


@pytest.mark.parametrize(
    "levers",
    [{"bf16_grams": True}, {"bf16_grams": False}, {"bf16_history": True}],
    ids=["bf16-grams", "fp32-copies", "bf16-history"],
)
def test_issue_31s_bf16_levers_stylize_as_the_plain_fp32_path(content, style, levers):
    """Issue 31's bf16 levers (style taps into the Gram in bf16; the L-BFGS history in bf16) at
    bf16 precision against the plain fp32 path: both distances within the levers' 10 %."""
    plain = Stylizer(device="cpu", bf16_grams=False).stylize(
        content, [style], params=tiny(schedule=((48, 30),), precision="fp32")
    )
    st = Stylizer(device="cpu", **levers)
    lever = st.stylize(content, [style], params=tiny(schedule=((48, 30),), precision="bf16"))
    (ca, sa), (cb, sb) = (st.distances(r.image, content, [style]) for r in (plain, lever))
    assert abs(cb - ca) <= 0.1 * ca and abs(sb - sa) <= 0.1 * sa


def test_the_bf16_gram_lever_keeps_the_taps_bf16_and_the_gram_float32(content):
    on, off = Stylizer(device="cpu", bf16_grams=True), Stylizer(device="cpu", bf16_grams=False)
    assert on.speed.bf16_grams  # the CPU's default, as measured
    x = resize(content[None], (32, 32))
    taps = on.network.features(x, "max", "bf16")
    assert {taps[n].dtype for n in STYLE_LAYERS} == {torch.bfloat16}
    assert taps["relu4_2"].dtype == torch.float32  # the content loss stays float32
    assert {v.dtype for v in off.network.features(x, "max", "bf16").values()} == {torch.float32}
    g16, g32 = (losses.gram(t["relu1_1"]) for t in (taps, off.network.features(x, "max", "bf16")))
    assert g16.dtype == torch.float32
    assert float((g16 - g32).norm() / g32.norm()) < 1e-2


def test_compile_step_stylizes_as_eager_and_keeps_its_code_on_disk(content, style, tmp_path):
    """torch.compile of the network and losses (and, by AOTAutograd, their backward): the same
    result within the levers' tolerance, and the compiled code written under the project's cache
    folder (NST_CACHE_DIR/inductor), where a node's next actor finds it."""
    import os

    params = tiny(schedule=((32, 8),), precision="fp32")
    eager = Stylizer(device="cpu").stylize(content, [style], params=params)
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    st = Stylizer(device="cpu", compile_step=True)
    folder = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert before or folder == os.path.join(os.environ["NST_CACHE_DIR"], "inductor")
    compiled = st.stylize(content, [style], params=params)
    (ca, sa), (cb, sb) = (st.distances(r.image, content, [style]) for r in (eager, compiled))
    assert abs(cb - ca) <= 0.1 * ca and abs(sb - sa) <= 0.1 * sa
    assert any(p.is_file() for p in Path(folder).rglob("*"))


def test_tf32_holds_for_the_optimization_only(content, style):
    """The TF32 lever (on by default on a GPU) changes torch's process-wide matmul setting only
    while a stylization runs: seen from inside the loop, and restored after, also when the run
    fails. Its numbers are a GPU's (CPU matmuls ignore it); gpu_check.py holds it to the
    levers' 10 % tolerance there (RESULTS.md, GPU check on an NVIDIA H100)."""
    matmul = torch.backends.cuda.matmul
    assert Stylizer(device="cpu").speed.tf32 is False  # a CPU default: nothing to gain
    st = Stylizer(device="cpu", tf32=True)
    seen = []
    before = matmul.fp32_precision
    st.stylize(
        content,
        [style],
        params=tiny(schedule=((32, 3),)),
        callback=lambda _: seen.append(matmul.fp32_precision),
    )
    assert seen and set(seen) == {"tf32"}
    assert matmul.fp32_precision == before
    with pytest.raises(ParamError):
        st.stylize(content, [], params=tiny())
    assert matmul.fp32_precision == before


def test_average_pooling_runs_its_own_network_and_still_stylizes(stylizer, content, style):
    """Gatys 2016's average pooling: other features than max pooling's (so other targets and
    another result), and the style distance still falls."""
    params = tiny(schedule=((48, 12),), pooling="avg")
    avg = stylizer.stylize(content, [style], params=params)
    plain = stylizer.stylize(content, [style], params=params.replace(pooling="max"))
    assert avg.params["pooling"] == "avg"
    assert (avg.image - plain.image).abs().mean() > 1e-3
    _, before = stylizer.distances(content, content, [style], pooling="avg")
    _, after = stylizer.distances(avg.image, content, [style], pooling="avg")
    assert after < 0.5 * before


def test_total_variation_weight_smooths_the_result(stylizer, content, style):
    params = tiny(schedule=((48, 12),))
    plain = stylizer.stylize(content, [style], params=params)
    # tv_loss is the mean squared neighbour difference (~7e-3 here) and the style term starts
    # near 3e14: a weight that puts TV on that scale must visibly smooth the result.
    smooth = stylizer.stylize(content, [style], params=params.replace(tv_weight=1e16))
    assert plain.losses.tv == 0.0 and smooth.losses.tv > 0.0
    assert all(t.losses.tv > 0 for t in smooth.trace)
    tv = [losses.tv_loss(r.image.unsqueeze(0)).item() for r in (plain, smooth)]
    assert tv[1] < 0.5 * tv[0]


def _rocket_and_scream(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A photo with open blue sky (scikit-image's rocket) and The Scream (the demo catalogue's
    Edvard Munch), whose orange and blue-black palette is far from the photo's."""
    import skimage.data

    from pipeline.io import images
    from pipeline.io.demo import demo_catalog

    rocket = torch.from_numpy(skimage.data.rocket()).permute(2, 0, 1).float() / 255
    rocket = resize(rocket[None], fit(rocket.shape, side, "content"))[0]
    scream = f"{demo_catalog()}/resized/resized/Edvard_Munch_1.jpg"
    return rocket, images.load(scream, max_side=side)


def test_the_default_paints_the_photo_in_the_paintings_palette_and_large_shapes(stylizer):
    """Issue 43's balance at a tiny size. relu1_1 is where colour lives: the loss before the
    relative per-layer one left it at 0.22 on this pair at 64 px and the content error at 1.2.
    The default before issue 43 (strength 0.5, 250 iterations) left relu4_1, the painting's large
    shapes, at 0.125 (relu3_1 0.082); strength 0.6 in half the iterations reaches 0.063 (0.046)
    at a content error of 0.81 against 0.55 -- the subject still there, as in the 1,000-iteration
    Gatys result."""
    rocket, scream = _rocket_and_scream(64)
    before = StyleParams(schedule=((256, 150), (512, 100)), strength=0.5)
    runs = {
        name: stylizer.stylize(rocket, [scream], params=p.resized(64).replace(precision="fp32"))
        for name, p in (("before", before), ("default", load_preset(DEFAULT_PRESET)))
    }
    default = runs["default"].quality
    assert default == pytest.approx(stylizer.measure(runs["default"].image, rocket, [scream]))
    assert default["relu1_1"] < 0.05
    assert runs["before"].quality["relu4_1"] > 0.09  # a bound the old default missed
    assert default["relu4_1"] < 0.09
    assert default["relu3_1"] < runs["before"].quality["relu3_1"]
    assert default["content"] < 0.9  # the photo's layout is still there


def test_strength_runs_from_the_photo_to_the_paintings_statistics(stylizer):
    rocket, scream = _rocket_and_scream(48)
    params = tiny(schedule=((48, 40),), precision="fp32")
    photo = stylizer.measure(rocket, rocket, [scream])
    runs = {
        s: stylizer.stylize(rocket, [scream], params=params.replace(strength=s))
        for s in (0, 0.5, 1)
    }
    style = {s: sum(r.quality[n] for n in STYLE_LAYERS) for s, r in runs.items()}
    assert (runs[0].image - rocket).abs().max() < 1e-6  # no style term: the photo stays
    assert runs[0].quality["content"] < 1e-6
    assert style[1] < style[0.5] < sum(photo[n] for n in STYLE_LAYERS)
    assert style[1] < 0.15 * sum(photo[n] for n in STYLE_LAYERS)
    assert runs[0.5].quality["content"] < runs[1].quality["content"]


def test_layer_weights_pull_the_weighted_layers_closer(stylizer):
    """All the weight on relu1_1 (colour) against all of it on relu4_1 (large shapes): each run
    brings its own layer closer to the painting than the other run does."""
    rocket, scream = _rocket_and_scream(48)
    params = tiny(schedule=((48, 20),), precision="fp32", strength=1.0)
    runs = {}
    for layer in ("relu1_1", "relu4_1"):
        weights = tuple(float(n == layer) for n in STYLE_LAYERS)
        result = stylizer.stylize(
            rocket, [scream], params=params.replace(style_layer_weights=weights)
        )
        runs[layer] = result.quality
        # The loss the optimization recorded is the weighted one the yardstick recomputes.
        judged = objective(result.quality, params.replace(style_layer_weights=weights))
        assert judged == pytest.approx(result.losses.total, rel=1e-3)
    assert runs["relu1_1"]["relu1_1"] < 0.5 * runs["relu4_1"]["relu1_1"]
    assert runs["relu4_1"]["relu4_1"] < 0.5 * runs["relu1_1"]["relu4_1"]


# -- convergence stopping (params.converge) ----------------------------------------------------


def test_a_level_stops_when_its_loss_stops_falling(stylizer, content, style):
    """With `converge`, a pair stops at the first iteration where its loss fell by less than that
    fraction over the last `converge_window` iterations, and what it has then is the whole
    budget's run cut short there. What stopping costs in quality is a figure of the shipped
    paintings at real sizes (tests/benchmarks/convergence.py, RESULTS.md: within issue 31's
    2 %); at 48 px the curve's plateaus make it depend on the CPU's arithmetic (3.0 % on an AMD
    EPYC, within 2 % on an Intel Xeon), so it is not pinned here."""
    fixed = stylizer.stylize(content, [style], params=tiny(schedule=((48, 200),), precision="fp32"))
    converge, window = 0.01, 10
    params = tiny(
        schedule=((48, 200),), precision="fp32", converge=converge, converge_window=window
    )
    early = stylizer.stylize(content, [style], params=params)
    assert fixed.iterations == 200
    n = early.iterations
    assert 20 < n < 200
    # The level ends where the pair stopped (the host looks every iteration on the CPU).
    assert len(early.trace) == n
    ran = [t.losses.total for t in early.trace]
    assert ran == pytest.approx([t.losses.total for t in fixed.trace[:n]], rel=1e-5)

    def fell(k: int) -> float:  # the relative fall over the window ending at iteration k
        return (ran[k - 1 - window] - ran[k - 1]) / ran[k - 1 - window]

    assert fell(n) < converge
    assert all(fell(k) >= converge for k in range(window + 1, n))
    assert early.losses.total == pytest.approx(ran[-1], rel=1e-5)
    # Off (the default) runs the whole budget, as before.
    assert stylizer.stylize(content, [style], params=tiny(precision="fp32")).iterations == 8


def test_in_a_stack_each_pair_stops_on_its_own(stylizer):
    """Two pairs that converge at different iterations, stacked: each stops about where it stops
    alone (within two windows and 2 % of the loss: float rounding differs between a stack and a
    pair alone, and L-BFGS amplifies it over a hundred iterations) and keeps the image it stopped
    with while its mate goes on."""
    contents = [make_content(seed=1), make_content(seed=2)]
    styles = [make_style(seed=3), make_style(seed=11, h=32, w=32)]
    params = tiny(schedule=((48, 200),), precision="fp32", converge=0.01, converge_window=10)
    stack = stylizer.stylize_stack(contents, [[s] for s in styles], params=params)
    alone = [stylizer.stylize(c, [s], params=params) for c, s in zip(contents, styles, strict=True)]
    assert stack[0].iterations != stack[1].iterations and max(r.iterations for r in stack) < 200
    for together, single in zip(stack, alone, strict=True):
        assert abs(together.iterations - single.iterations) <= 20
        assert abs(together.losses.total - single.losses.total) < 0.02 * single.losses.total
        # The trace ends where the level ended (the later pair's stop); a stopped pair's losses
        # stay flat after its stop.
        stopped = [p.losses.total for p in together.trace[together.iterations :]]
        assert len(set(stopped)) <= 1


def test_convergence_parameters_are_checked():
    with pytest.raises(ParamError, match="converge"):
        tiny(converge=1.5)
    with pytest.raises(ParamError, match="converge_window"):
        tiny(converge=0.01, converge_window=0)
