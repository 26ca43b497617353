"""Checks on an uploaded image, from its header, before anything decodes the whole of it."""

from __future__ import annotations

import io
from dataclasses import dataclass

from fastapi import HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError

from ..core.errors import ParamError, StylizeError
from ..core.params import StyleParams
from ..core.sizes import MIN_SIDE, fit
from ..io import formats
from ..io.images import ImageError
from ..io.mask_files import MaskSettings, decode_mask
from .settings import Settings


@dataclass(frozen=True)
class Upload:
    """An accepted image: its bytes and its size in pixels."""

    what: str  # 'content', 'style 2': names it in messages
    data: bytes
    width: int
    height: int


async def read_upload(file: UploadFile, what: str, max_bytes: int) -> bytes:
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"{what}: file too large (limit {max_bytes / 2**20:.1f} MB)")
    return data


def inspect_image(data: bytes, what: str, max_pixels: int) -> Upload:
    """Type and pixel count from the header: a 100-megapixel PNG is refused without decoding."""
    try:
        with Image.open(io.BytesIO(data), formats=formats.OPEN_FORMATS) as img:
            width, height = img.width, img.height
    except (UnidentifiedImageError, OSError):
        raise HTTPException(400, f"{what}: not an image ({formats.NAMES})") from None
    except Image.DecompressionBombError as exc:  # over twice PIL's MAX_IMAGE_PIXELS
        raise HTTPException(400, f"{what}: refused as a decompression bomb ({exc})") from None
    if width * height > max_pixels:
        raise HTTPException(
            400,
            f"{what}: {width * height / 1e6:.0f} MP is over the {max_pixels / 1e6:.0f} MP limit",
        )
    if min(width, height) < MIN_SIDE:
        raise HTTPException(
            400, f"{what}: too small: {width}x{height} px, at least {MIN_SIDE} px a side"
        )
    return Upload(what, data, width, height)


def check_fits(upload: Upload, params: StyleParams, *, style: bool) -> None:
    """Every level of the schedule can take the image: a very wide one at a small size cannot.

    The engine's own rule (`fit`) decides, on the shape the header gives, so that the visitor
    hears it now instead of as a failed task.
    """
    shape = (upload.height, upload.width)
    for size, _ in params.schedule:
        side = params.style_side_at(size) if style else size
        try:
            fit(shape, side, upload.what)
        except StylizeError as exc:
            raise HTTPException(400, f"{exc}; choose a larger size or crop the image") from None


def check_mask(
    data: bytes, regions: str | None, invert: bool, content: Upload, styles: int, settings: Settings
) -> None:
    """The mask upload as `nst stylize --mask` checks it: an image within the limits, of the
    content's aspect, its colours all mapped, its mapping naming the styles given."""
    upload = inspect_image(data, "mask", settings.max_upload_pixels)
    try:
        mask_settings = MaskSettings.parse(regions, invert)
        mask_settings.check_styles(styles)
        shape = (3, content.height, content.width)
        decode_mask(upload.data, "mask", mask_settings, shape, max_side=settings.max_size)
    except (ParamError, ImageError) as exc:
        raise HTTPException(400, str(exc)) from None
