"""Decode and encode images: PIL in, (3, H, W) float tensors out, PNG bytes back.

Every failure is an `ImageError` naming the file and the reason, so that a batch job can turn it
into a failed row. Decisions on odd inputs (documented in the README):

- EXIF orientation is applied, so a phone photo comes out the right way up.
- Any mode becomes RGB: palette and grayscale are expanded, transparency is composited on white,
  CMYK is converted, 16-bit images are scaled down to 8 bits.
- Animated images (GIF, APNG, WebP): the first frame is used.
- PIL's decompression-bomb guard stays on: an image past twice `Image.MAX_IMAGE_PIXELS` is refused.
- An image with a side shorter than 16 px is refused: VGG-19's four poolings leave nothing of it.
- An image longer than `max_side` is shrunk in its own mode (8 or 16 bits a channel) before it
  becomes RGB or float, so that a request costs memory for the size it is used at: a 40 MP file
  is a few hundred kB of floats at 512 px, not 500 MB.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.errors import NSTError
from ..core.sizes import MIN_SIDE
from . import formats


class ImageError(NSTError, ValueError):
    """An input image cannot be used: `field` is the file or URI, `reason` is short and meant
    for a failed row."""


def decode(
    data: bytes | str | os.PathLike,
    name: str | None = None,
    max_side: int | None = None,
    max_pixels: int | None = None,
    *,
    keep_colors: bool = False,
) -> torch.Tensor:
    """Image bytes or a path -> (3, H, W) float32 RGB in [0,1].

    `max_side` shrinks large images while decoding (JPEG draft mode, then a high-quality
    resize) so that a 40-megapixel photo never becomes a 500 MB tensor. `max_pixels` refuses,
    from the header alone, an image larger than a worker is set to hold. `keep_colors` shrinks
    by nearest neighbour instead, so that the result holds only colours of the file (a
    colour-keyed mask: a smooth resize would blend two keys into a third along every edge).
    """
    name = name or (str(data) if not isinstance(data, bytes) else "<bytes>")
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with Image.open(source, formats=formats.OPEN_FORMATS) as img:
            # Between MAX_IMAGE_PIXELS and twice it PIL only warns; we refuse from the limit on, by
            # the header's size: not by turning the warning into an error, since
            # `warnings.catch_warnings` is process-wide and an actor decodes two calls at
            # once on two threads (one thread's exit dropped the other's filter).
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:
                raise Image.DecompressionBombError(
                    f"{img.width}x{img.height} px, over PIL's limit of {limit} px"
                )
            if max_pixels and img.width * img.height > max_pixels:
                raise TooLarge(
                    name,
                    f"{img.width}x{img.height} px ({img.width * img.height / 1e6:.1f} MP) "
                    f"exceeds this worker's limit of {max_pixels / 1e6:.1f} MP "
                    "(resources.max_pixels)",
                )
            _check_side(img.size, name)
            if max_side and img.format == "JPEG" and not keep_colors:
                img.draft("RGB", (max_side, max_side))
            img.load()
            # Shrunk before the rotation, which copies: a square bound fits either way.
            img = ImageOps.exif_transpose(_shrink(img, max_side, keep_colors))
            rgb = _to_rgb(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (unrecognized or empty file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated data, broken chunks, bad headers
        raise ImageError(name, f"corrupt or truncated image ({exc})") from None
    return _to_tensor(rgb)


def from_array(
    array: np.ndarray, name: str = "<array>", max_side: int | None = None
) -> torch.Tensor:
    """An image array as Ray Data's `read_images` gives it ((H, W), (H, W, 3) or (H, W, 4)
    uint8) -> (3, H, W) float32 RGB in [0,1], converted and shrunk exactly as `decode` does."""
    try:
        img = Image.fromarray(np.ascontiguousarray(array))
    except (TypeError, ValueError) as exc:
        raise ImageError(name, f"not an image array ({exc})") from None
    _check_side(img.size, name)
    return _to_tensor(_to_rgb(_shrink(img, max_side)))


def _check_side(size: tuple[int, int], name: str) -> None:
    if min(size) < MIN_SIDE:
        raise ImageError(
            name, f"too small: {size[0]}x{size[1]} px, VGG-19 needs >= {MIN_SIDE} px a side"
        )


def _shrink(img: Image.Image, max_side: int | None, keep_colors: bool = False) -> Image.Image:
    """At most `max_side` px long, still in the file's mode: nothing of full size is converted."""
    if not max_side or max(img.size) <= max_side:
        return img
    box = (max_side, max_side)
    if keep_colors:
        return ImageOps.contain(img, box, Image.Resampling.NEAREST)
    if img.mode in ("P", "PA"):  # PIL resizes palette indices, not colours
        img = img.convert("RGBA")
    elif img.mode == "1":
        img = img.convert("L")
    return ImageOps.contain(img, box, Image.Resampling.LANCZOS)


def _to_tensor(rgb: Image.Image) -> torch.Tensor:
    array = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class TooLarge(ImageError):
    """Larger than the worker's memory guard allows (stands in for an out-of-memory)."""


def load(
    path: str | os.PathLike, max_side: int | None = None, max_pixels: int | None = None
) -> torch.Tensor:
    return decode(Path(path), name=str(path), max_side=max_side, max_pixels=max_pixels)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def to_array(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0,1] -> (H, W, 3) uint8, rounded."""
    array = (image.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return array.permute(1, 2, 0).numpy()


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0,1] -> 8-bit RGB PIL image."""
    return Image.fromarray(to_array(image), "RGB")


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_bytes(image: torch.Tensor) -> bytes:
    return encode_png(to_pil(image))


def save_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png_bytes(image))
