"""Decoding: odd but valid images work, broken ones raise ImageError naming the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.io import images
from pipeline.io.images import ImageError


def _save(img: Image.Image, path, fmt: str, **kw) -> str:
    img.save(path, fmt, **kw)
    return str(path)


def _rgb(w: int = 40, h: int = 24) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)
    a[: h // 2, :, 2] = 200  # blue top half: tells up from down
    return Image.fromarray(a, "RGB")


def test_rgb_png_round_trip(tmp_path):
    path = _save(_rgb(), tmp_path / "a.png", "PNG")
    x = images.load(path)
    assert x.shape == (3, 24, 40) and str(x.dtype) == "torch.float32"
    images.save_png(x, tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), np.asarray(_rgb()))


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = _save(_rgb(), tmp_path / "r.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    x = images.load(path)
    assert x.shape == (3, 40, 24)  # displayed upright: portrait
    assert x[2, :, -4].mean() > 0.6 and x[2, :, 3].mean() < 0.2  # blue half now on the right


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16"])
def test_other_modes_become_rgb(tmp_path, mode):
    img = _rgb()
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = img.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = _save(img, tmp_path / f"m.{fmt.lower()}", fmt)
    x = images.load(path)
    assert x.shape == (3, 24, 40)
    assert 0.0 <= x.min() and x.max() <= 1.0
    # Brightest pixel: red 255 + blue 200 (luma 0.39 in grayscale modes), not crushed to black.
    assert x.max() > 0.35


def test_transparency_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    x = images.load(_save(img, tmp_path / "t.png", "PNG"))
    assert x.min() == 1.0


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    x = images.load(path)
    assert x[0].mean() > 0.9 and x[2].mean() < 0.1


def test_max_side_shrinks_while_decoding(tmp_path):
    path = _save(_rgb(400, 200), tmp_path / "big.jpg", "JPEG")
    assert images.load(path, max_side=100).shape == (3, 50, 100)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.jpg", b"", "not an image"),
        ("text.jpg", b"hello, I am not a JPEG\n" * 10, "not an image"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError, match=f"{name}: {reason}"):
        images.load(path)


def test_truncated_jpeg_and_broken_png(tmp_path):
    buf = io.BytesIO()
    _rgb(200, 200).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg: corrupt or truncated"):
        images.load(tmp_path / "cut.jpg")
    buf = io.BytesIO()
    _rgb().save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[40:48] = b"\xff" * 8  # inside IHDR/IDAT: bad CRC
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="bad.png: "):
        images.load(tmp_path / "bad.png")


def test_missing_tiny_and_bomb(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="gone.png: file not found"):
        images.load(tmp_path / "gone.png")
    with pytest.raises(ImageError, match="too small: 8x8"):
        images.load(_save(Image.new("RGB", (8, 8)), tmp_path / "tiny.png", "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="decompression bomb"):
        images.load(_save(_rgb(), tmp_path / "bomb.png", "PNG"))


def test_unreadable_file_names_the_reason(tmp_path, monkeypatch):
    # Tests run as root in CI, where chmod 000 does not stop a read: raise the OS's own error.
    path = tmp_path / "locked.png"
    _save(_rgb(), path, "PNG")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageError, match="locked.png: permission denied"):
        images.load(path)


def test_a_format_outside_the_one_list_is_not_parsed(tmp_path):
    """Only the parsers of the accepted formats see a file's bytes: an icon or a PPM, which
    Pillow could read, is not an image here."""
    from pipeline.io import formats

    for name, kind in (("icon.ico", "ICO"), ("frame.png", "PPM")):
        path = tmp_path / name
        Image.new("RGB", (32, 32), (10, 20, 30)).save(path, kind)
        with pytest.raises(images.ImageError) as info:
            images.load(path)
        assert info.value.field == str(path)
        assert info.value.reason == "not an image (unrecognized or empty file)"
    assert not formats.is_image_name("icon.ico")
    assert formats.is_image_name("a/B.JPEG") and not formats.is_image_name("a/._b.jpg")
