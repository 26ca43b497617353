"""Dataset mode: a stylized copy of a whole image tree that existing loaders and annotations read.

Each content gets `styles_per_content` paintings sampled with a seed; the output mirrors the input
tree (`val2017/000000000139.jpg` -> `<output>/<job>/dataset/val2017/000000000139.jpg`, with a
`__<painting>` suffix per style when k > 1), in JPEG or PNG, at a size policy that users of
bethgelab/stylize-datasets know: keep the original size, scale the shorter side to N, or
centre-crop to N x N.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import images
from .params import MIN_SIDE, StyleParams

SIZE_POLICIES = ("keep", "shorter", "crop")
FORMATS = ("jpeg", "png")


class UnsafePath(ValueError):
    """A content's relative path would leave the output tree."""


@dataclass(frozen=True)
class DatasetSpec:
    styles_per_content: int = 1
    seed: int = 0
    format: str = "jpeg"
    quality: int = 90  # JPEG quality
    size_policy: str = "shorter"
    size: int = 512  # N for `shorter` and `crop`; for `keep` the stylization's long side

    @property
    def suffix(self) -> str:
        return ".jpg" if self.format == "jpeg" else ".png"


def dest_path(content_identity: str, style_identity: str, spec: DatasetSpec) -> str:
    """The mirrored relative path of one output; refuses anything that could leave the tree."""
    if content_identity.startswith("coco-val2017:"):
        rel = "val2017/" + content_identity.split(":", 1)[1]
    elif content_identity.startswith("demo:"):
        rel = content_identity.split(":", 1)[1] + ".png"
    else:
        rel = content_identity
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"{content_identity!r}: not a safe relative path")
    stem = posixpath.splitext(rel)[0]
    if spec.styles_per_content > 1:
        # [demo:]artworks:<tree>:<artist>:<n>: the mini catalogue's too (its numbers repeat)
        if style_identity.removeprefix("demo:").startswith("artworks:"):
            tag = "_".join(style_identity.rsplit(":", 2)[-2:])
        else:
            tag = posixpath.splitext(posixpath.basename(style_identity.split(":")[-1]))[0]
        stem += "__" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tag)
    return stem + spec.suffix


def prepare(
    content: torch.Tensor, spec: DatasetSpec, params: StyleParams
) -> tuple[torch.Tensor, StyleParams, tuple[int, int] | None]:
    """(content to stylize, its parameters, the final (H, W) to resize the result to or None)."""
    h, w = content.shape[-2:]
    if spec.size_policy == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return content[:, top : top + side, left : left + side], params.resized(spec.size), None
    if spec.size_policy == "shorter":
        long_side = round(spec.size * max(h, w) / min(h, w))
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
