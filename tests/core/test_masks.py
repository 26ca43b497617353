"""Spatial control (pipeline/core/masks.py): regions keep the photo or take their own style."""

from __future__ import annotations

import pytest
import torch

from pipeline.core import losses, masks
from pipeline.core.masks import BLEND, KEEP, RegionKey, SpatialMask
from pipeline.core.network import STYLE_LAYERS, tap_size
from pipeline.core.params import ParamError
from pipeline.core.sizes import resize

from ..conftest import make_content, make_style, tiny


def halves(h: int = 48, w: int = 64) -> torch.Tensor:
    """A grey mask (H, W): left half black, right half white."""
    grey = torch.zeros(h, w)
    grey[:, w // 2 :] = 1
    return grey


def checker_style(h: int = 64, w: int = 64) -> torch.Tensor:
    """A blue/yellow checkerboard: other colours and another texture than `make_style`."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cells = (((yy // 4) + (xx // 4)) % 2).float()
    return torch.stack([cells, cells, 1 - cells]) * 0.9 + 0.05


def test_regions_parse_and_print_canonically():
    keys = masks.parse_regions(" #FF0000=1, 0000ff=2,#000000=none")
    assert keys == (
        RegionKey((255, 0, 0), 0),
        RegionKey((0, 0, 255), 1),
        RegionKey((0, 0, 0), None),
    )
    assert masks.format_regions(keys) == "#ff0000=1,#0000ff=2,#000000=none"
    for bad, reason in [
        ("#ff0000", "expected #RRGGBB=N"),
        ("red=1", "expected #RRGGBB=N"),
        ("#ff0000=0", "a style number from 1, or none"),
        ("#ff0000=1,#FF0000=none", "given twice"),
    ]:
        with pytest.raises(ParamError, match=reason) as info:
            masks.parse_regions(bad)
        assert info.value.field == "mask_regions"


def test_region_styles_must_match_the_pairs_styles():
    keys = masks.parse_regions("#ff0000=1,#0000ff=3")
    with pytest.raises(ParamError, match="names style 3, but there are 2"):
        masks.check_region_styles(keys, 2)
    with pytest.raises(ParamError, match="style 2 is given but no region uses it"):
        masks.check_region_styles(masks.parse_regions("#ff0000=1,#000000=none"), 2)


def test_tap_sizes_are_the_networks(stylizer):
    feats = stylizer.network.features(torch.rand(1, 3, 37, 50), "max")
    assert {n: tuple(feats[n].shape[-2:]) for n in STYLE_LAYERS} == {
        n: tap_size(n, (37, 50)) for n in STYLE_LAYERS
    }


def test_an_all_ones_region_gives_exactly_the_unmasked_style_loss(stylizer):
    """The normalization (by the region's energy, shares as weights) reduces to the plain loss."""
    feats = stylizer.network.features(make_content()[None], "max")
    style = stylizer.network.features(make_style()[None], "max")
    targets = {n: losses.gram(f) for n, f in style.items()}
    ones = torch.ones(1, 48, 64)
    guide = masks.LevelGuide(
        weights=masks.to_taps(ones, {n: tap_size(n, (48, 64)) for n in STYLE_LAYERS}),
        shares=torch.ones(1),
        targets={n: targets[n] for n in STYLE_LAYERS},
    )
    plain = losses.style_loss({n: losses.gram(feats[n]) for n in STYLE_LAYERS}, targets)
    guided = masks.guided_style_loss(feats, guide)
    assert torch.allclose(guided, plain, rtol=1e-5)


def test_a_kept_region_stays_the_photo_while_the_styled_region_moves(stylizer):
    content, style = make_content(), make_style()
    params = tiny(schedule=((32, 4), (48, 8)))
    result = stylizer.stylize(content, [style], params=params, mask=SpatialMask.grey(halves()))
    photo = resize(content[None], tuple(result.image.shape[-2:]))[0]
    change = (result.image - photo).abs().mean(0)  # (36, 48)
    # Left of the feathered edge (col 24 +- 2 px at 48 px): exactly the photo; right: painted.
    assert torch.equal(result.image[:, :, :21], photo[:, :, :21])
    assert float(change[:, 28:].mean()) > 0.05
    plain = stylizer.stylize(content, [style], params=params)
    assert float((plain.image - photo).abs().mean(0)[:, :21].mean()) > 0.05  # would move


def test_inverted_grey_mask_swaps_the_sides(stylizer):
    content, style = make_content(), make_style()
    params = tiny(schedule=((48, 6),))
    mask = SpatialMask.grey(halves(), invert=True)
    result = stylizer.stylize(content, [style], params=params, mask=mask)
    change = (result.image - resize(content[None], (36, 48))[0]).abs().mean(0)
    assert float(change[:, 27:].max()) < 1e-6 and float(change[:, :20].mean()) > 0.02


def _guided_distance(stylizer, image, region, style) -> float:
    """Style loss of `image` restricted to `region` (H, W) against the whole `style`."""
    feats = stylizer.network.features(image[None], "max")
    hw = tuple(image.shape[-2:])
    weights = masks.at_size(region[None], hw)
    target = stylizer.network.features(resize(style[None], hw), "max")
    guide = masks.LevelGuide(
        weights=masks.to_taps(weights, {n: tap_size(n, hw) for n in STYLE_LAYERS}),
        shares=torch.ones(1),
        targets={n: losses.gram(target[n]) for n in STYLE_LAYERS},
    )
    return float(masks.guided_style_loss(feats, guide))


def test_two_regions_each_end_closer_to_their_own_style(stylizer):
    """Left half -> style 1, right half -> style 2, and swapped: each half's Gram ends nearer
    its own style's (the swap shows it is the mask's doing, not the photo's). Relative errors
    after 24 iterations at 48 px: 0.52-0.82 to its own style, 0.88-3.8 to the other."""
    content = make_content()
    stripes, checker = make_style(), checker_style()
    key = masks.parse_regions("#000000=1,#ffffff=2")
    rgb = halves()[None].expand(3, -1, -1)
    params = tiny(schedule=((48, 24),))
    left, right = 1 - halves(), halves()
    for styles in ([stripes, checker], [checker, stripes]):
        mask = SpatialMask.from_colors(rgb, key)
        image = stylizer.stylize(content, styles, params=params, mask=mask).image
        for region, own, other in ((left, *styles), (right, *styles[::-1])):
            mine = _guided_distance(stylizer, image, region, own)
            theirs = _guided_distance(stylizer, image, region, other)
            assert mine < 0.75 * theirs


def test_a_masked_pair_in_a_stack_comes_out_as_it_does_alone(stylizer):
    """Per-pair masks in one optimization: a masked and an unmasked pair, each as alone (the
    tolerance of tests/core/test_engine.py's stack test)."""
    contents = [make_content(seed=1), make_content(seed=2)]
    styles = [[make_style(seed=4)], [make_style(seed=5)]]
    mask = SpatialMask.grey(halves())
    params = tiny(schedule=((48, 6),), precision="fp32")
    stack = stylizer.stylize_stack(contents, styles, params=params, masks=[mask, None])
    for c, s, m, together in zip(contents, styles, [mask, None], stack, strict=True):
        alone = stylizer.stylize(c, s, params=params, mask=m)
        assert float((together.image - alone.image).abs().max()) < 5e-3
        assert abs(together.losses.total - alone.losses.total) < 1e-3 * alone.losses.total


def test_colour_keyed_masks_refuse_unknown_colours_and_tolerate_edge_noise():
    keys = masks.parse_regions("#ff0000=1,#000000=none")
    rgb = torch.zeros(3, 40, 40)
    rgb[0, :, 20:] = 1  # red right half
    rgb[:, 0, 0] = torch.tensor([0.5, 0.0, 0.5])  # one smeared pixel: nearest colour
    mask = SpatialMask.from_colors(rgb, keys)
    assert mask.targets == (0, None) and torch.equal(mask.weights.sum(0), torch.ones(40, 40))
    assert abs(float(mask.weights[0].mean()) - 0.5) < 1e-3
    rgb[1, :10] = 1  # a yellow/green band a quarter high: a colour the key lacks
    with pytest.raises(ParamError, match=r"25.0% of its pixels match no colour") as info:
        SpatialMask.from_colors(rgb, keys, field="masks/cat.png")
    assert info.value.field == "masks/cat.png"


def test_a_mapping_is_capped_and_only_the_colours_present_become_regions():
    """A mapping has at most MAX_REGIONS colours in a bounded text; a region is made only for a
    key whose colour the mask holds, so a long mapping over a one-colour mask costs one region."""
    many = ",".join(f"#{i:06x}={'1' if i == 0 else 'none'}" for i in range(masks.MAX_REGIONS + 1))
    for text, reason in (
        (many, f"at most {masks.MAX_REGIONS} colours; got {masks.MAX_REGIONS + 1}"),
        ("#ff0000=1" + " " * masks.MAX_REGIONS_CHARS, f"at most {masks.MAX_REGIONS_CHARS} char"),
    ):
        with pytest.raises(ParamError, match=reason) as info:
            masks.parse_regions(text)
        assert info.value.field == "mask_regions"
    keys = masks.parse_regions(many.rpartition(",")[0])
    assert len(keys) == masks.MAX_REGIONS
    black = torch.zeros(3, 64, 48)
    mask = SpatialMask.from_colors(black, keys)
    assert mask.targets == (0,) and mask.weights.shape == (1, 64, 48)
    assert torch.equal(mask.weights, torch.ones(1, 64, 48))


def test_colours_map_to_keys_as_each_pixel_to_its_nearest_key():
    """Mapping the mask's distinct colours gives what the nearest key of every pixel gives."""
    keys = masks.parse_regions("#ff0000=1,#0000ff=2,#000000=none,#ffffff=1,#00ff00=none")
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(0, 4, (40, 56), generator=g)  # four of the five colours: no green
    palette = torch.tensor([k.color for k in keys], dtype=torch.float32) / 255
    rgb = palette[pick].permute(2, 0, 1)  # (3, 40, 56)
    noise = torch.randint(-20, 21, rgb.shape, generator=g) / 255  # JPEG-like, within tolerance
    rgb = (torch.round((rgb + noise).clamp(0, 1) * 255) / 255).contiguous()
    mask = SpatialMask.from_colors(rgb, keys)
    nearest = torch.cdist(rgb.flatten(1).T, palette).argmin(1).reshape(40, 56)
    assert mask.targets == (0, 1, None, 0)  # the green key's colour is absent: no region
    for region, key in enumerate((0, 1, 2, 3)):
        assert torch.equal(mask.weights[region], (nearest == key).float())


def test_grey_masks_refuse_colours_and_masks_refuse_another_aspect(stylizer):
    rgb = torch.zeros(3, 40, 40)
    rgb[0, :, 20:] = 1
    with pytest.raises(ParamError, match="50.0% of its pixels are coloured"):
        masks.grey_levels(rgb)
    assert masks.aspect_mismatch((96, 128), (48, 64)) is None  # scale only: fine
    assert masks.aspect_mismatch((37, 50), (48, 64)) is None  # rounded sides: fine
    wrong = SpatialMask.grey(torch.ones(64, 64))
    with pytest.raises(ParamError, match="differs from the content.s 1.333") as info:
        stylizer.stylize(make_content(), [make_style()], params=tiny(), mask=wrong)
    assert info.value.field == "mask"
    two = SpatialMask(torch.ones(1, 48, 64), (1,))
    with pytest.raises(ParamError, match="names style 2; the pair has 1"):
        stylizer.stylize(make_content(), [make_style()], params=tiny(), mask=two)


def test_mask_targets_are_checked():
    with pytest.raises(ParamError, match="2 regions"):
        SpatialMask(torch.ones(1, 8, 8), (BLEND, KEEP))
    with pytest.raises(ParamError, match="target"):
        SpatialMask(torch.ones(1, 8, 8), ("sky",))
