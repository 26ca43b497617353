"""Input images by reference: what a pair names, and how a worker reads it."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

import torch

from . import images
from .demo import demo_image
from .identities import DEMO, split
from .storage import S3Settings, Storage, StorageError, is_remote


@dataclass(frozen=True)
class ImageRef:
    """An input image: where to read it and what identifies it on any machine."""

    uri: str  # a local path, an s3:// URI, or demo:<name> (identities.py)
    identity: str  # stable across machines: relative path or catalogue identity
    artist: str | None = None
    genre: str | None = None
    nationality: str | None = None


def read_image(
    ref: ImageRef,
    max_side: int | None = None,
    s3: S3Settings | None = None,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """(3, H, W) in [0,1]; any failure is an ImageError naming the URI."""
    scheme, name = split(ref.uri)
    if scheme == DEMO:
        image = demo_image(name)
        if max_side and max(image.shape[-2:]) > max_side:
            return images.decode(images.png_bytes(image), name=ref.uri, max_side=max_side)
        return image
    data = read_source(ref, s3)
    return images.decode(data, name=ref.uri, max_side=max_side, max_pixels=max_pixels)


def read_source(ref: ImageRef, s3: S3Settings | None = None) -> bytes | Path:
    """A local file's path (decoded from disk) or a remote object's bytes; a remote failure is
    an ImageError naming the URI."""
    if not is_remote(ref.uri):
        return Path(ref.uri)
    parent, name = posixpath.split(ref.uri)
    try:
        return Storage(parent, s3).read_bytes(name)
    except FileNotFoundError:
        raise images.ImageError(ref.uri, "file not found") from None
    except StorageError as exc:
        raise images.ImageError(ref.uri, exc.reason) from None
