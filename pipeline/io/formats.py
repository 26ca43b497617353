"""The image formats the pipeline reads, in one place: listing a folder, a glob or a prefix, the
catalogue's tree, the web page's uploads and decoding all ask this module."""

from __future__ import annotations

from pathlib import PurePosixPath

# PIL's format name -> the file suffixes it goes by. MPO is how PIL names the multi-picture
# JPEGs many cameras write; it has no suffix of its own.
FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
}
IMAGE_SUFFIXES = tuple(suffix for suffixes in FORMATS.values() for suffix in suffixes)
# What `PIL.Image.open(..., formats=OPEN_FORMATS)` tries: only these parsers ever see a file's
# bytes, not the dozens of others Pillow has (a file that is none of these is not an image).
# Pillow opens MPO files with its JPEG parser, which has no MPO entry of its own.
OPEN_FORMATS = tuple(name for name in FORMATS if name != "MPO")
# For messages: "JPEG, PNG, WEBP, GIF, BMP, TIFF".
NAMES = ", ".join(name for name, suffixes in FORMATS.items() if suffixes)


def is_image_name(name: str) -> bool:
    """A file or key that listing takes as an image: a known suffix, any case, and not hidden
    (macOS's `._photo.jpg` beside `photo.jpg` is metadata)."""
    leaf = PurePosixPath(name.replace("\\", "/")).name
    return leaf.lower().endswith(IMAGE_SUFFIXES) and not leaf.startswith(".")
