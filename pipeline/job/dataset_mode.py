"""Dataset mode: a stylized copy of a whole image tree that existing loaders and annotations read.

Each content gets `styles_per_content` paintings sampled with a seed; the output mirrors the input
tree (`val2017/000000000139.jpg` -> `<output>/<job>/dataset/val2017/000000000139.jpg`, with a
`__<painting>` suffix per style when k > 1), in JPEG or PNG, at a size policy that users of
bethgelab/stylize-datasets know: keep the original size, scale the shorter side to N, or
centre-crop to N x N.
"""

from __future__ import annotations

import io
import math
import posixpath
from typing import Annotated, Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..core.errors import NSTError
from ..core.params import StyleParams
from ..core.sizes import MIN_SIDE
from ..io import images
from ..io.identities import COCO_VAL2017, DEMO, split

SizePolicy = Literal["keep", "shorter", "crop"]
Format = Literal["jpeg", "png"]
SIZE_POLICIES: tuple[str, ...] = get_args(SizePolicy)
FORMATS: tuple[str, ...] = get_args(Format)


class UnsafePath(NSTError, ValueError):
    """A content's relative path would leave the output tree."""


class DatasetSpec(BaseModel):
    """The `dataset:` section of a job spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    styles_per_content: Annotated[StrictInt, Field(ge=1)] = 1
    seed: StrictInt = 0
    format: Format = "jpeg"
    quality: Annotated[StrictInt, Field(ge=1, le=100)] = 90  # JPEG quality
    size_policy: SizePolicy = "shorter"
    # N for `shorter` and `crop`; for `keep` the stylization's long side
    size: Annotated[StrictInt, Field(ge=MIN_SIDE)] = 512

    @property
    def suffix(self) -> str:
        return ".jpg" if self.format == "jpeg" else ".png"


def dest_path(content_identity: str, style_identity: str, spec: DatasetSpec) -> str:
    """The mirrored relative path of one output; refuses anything that could leave the tree."""
    scheme, name = split(content_identity)
    if scheme == COCO_VAL2017:
        rel = "val2017/" + name
    elif scheme == DEMO:
        rel = name + ".png"
    else:
        rel = content_identity
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(content_identity, "not a safe relative path")
    stem = posixpath.splitext(rel)[0]
    if spec.styles_per_content > 1:
        # [demo:]artworks:<tree>:<artist>:<n>: the mini catalogue's too (its numbers repeat)
        style_scheme, style_name = split(style_identity)
        if (style_name if style_scheme == DEMO else style_identity).startswith("artworks:"):
            tag = "_".join(style_identity.rsplit(":", 2)[-2:])
        else:  # the style's path below its folder: monet/water.jpg and degas/water.jpg differ
            tag = posixpath.splitext(style_identity.split(":")[-1])[0]
        stem += "__" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tag)
    return stem + spec.suffix


def prepare(
    content: torch.Tensor, spec: DatasetSpec, params: StyleParams, max_pixels: int
) -> tuple[torch.Tensor, StyleParams, tuple[int, int] | None]:
    """(content to stylize, its parameters, the final (H, W) to resize the result to or None).

    No level exceeds `max_pixels`, content or style, whatever the content's aspect ratio."""
    h, w = content.shape[-2:]
    if spec.size_policy == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return content[:, top : top + side, left : left + side], params.resized(spec.size), None
    if spec.size_policy == "shorter":
        ratio = max(h, w) / min(h, w)
        # A 16 x 4000 px strip would ask for a 128,000 px long side: the long side is capped so
        # that long x short (= long^2 / ratio) and the style (up to long^2 x style_scale^2, a
        # square painting) stay within max_pixels; the short side then falls under N.
        cap = min(math.sqrt(max_pixels * ratio), math.sqrt(max_pixels) / params.style_scale)
        long_side = min(round(spec.size * ratio), math.floor(cap))
        return content, params.resized(max(MIN_SIDE, long_side)), None
    return content, params.resized(spec.size), (h, w)  # keep: stylize, then back to (h, w)


def finish(image: torch.Tensor, final: tuple[int, int] | None) -> torch.Tensor:
    if final is None or tuple(image.shape[-2:]) == final:
        return image
    return F.interpolate(image[None], size=final, mode="bicubic", align_corners=False)[0].clamp(
        0, 1
    )


def encode(image: torch.Tensor, spec: DatasetSpec) -> bytes:
    if spec.format == "png":
        return images.png_bytes(image)
    buffer = io.BytesIO()
    images.to_pil(image).save(buffer, "JPEG", quality=spec.quality)
    return buffer.getvalue()
