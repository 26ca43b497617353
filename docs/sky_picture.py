"""Makes docs/sky.jpg: one photo with open sky crossed with the shipped paintings at each preset.
From the repository root (on 2 CPU cores the fast preset takes ~1 min a pair, quality ~13, print
under an hour by its former 1.75 h; on a GPU all four take minutes: `docs/sky.sh`):

    for p in preview fast quality print; do .venv/bin/python tests/benchmarks/quality.py \
        --presets $p --photos rocket --out sky/$p; done
    .venv/bin/python docs/sky_picture.py sky docs/sky.jpg preview fast quality print

The first row is the photo (scikit-image's rocket, public domain: docs/NOTICE; `--photo FILE`
reads it from a file instead, where scikit-image is not installed) and the paintings; each
further row a preset's results, labelled on the left.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from pipeline.io.demo import demo_catalog

TILE = 256
PAINTINGS = sorted((Path(demo_catalog()) / "resized" / "resized").glob("*.jpg"))


def fitted(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    image.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
    return image


def rocket() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.rocket())


def main(folder: str, out: str, presets: list[str], photo: str | None = None) -> None:
    first = Image.open(photo) if photo else rocket()
    name = Path(photo).stem if photo else "rocket"
    rows = [[first] + [Image.open(p) for p in PAINTINGS]]
    labels = ["photo | paintings"]
    for preset in presets:
        results = [Path(folder) / preset / f"{name}__{p.stem}.png" for p in PAINTINGS]
        rows.append([None] + [Image.open(r) for r in results])
        labels.append(preset)
    rows = [[None if image is None else fitted(image) for image in row] for row in rows]
    heights = [max(image.height for image in row if image is not None) for row in rows]
    sheet = Image.new("RGB", (len(rows[0]) * (TILE + 8), sum(h + 8 for h in heights)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for row, label, height in zip(rows, labels, heights, strict=True):
        for j, image in enumerate(row):
            if image is not None:
                sheet.paste(image, (j * (TILE + 8), y))
        if row[0] is None:
            draw.text((8, y + height // 2), label, fill=(40, 40, 40))
        y += height + 8
    sheet.save(out, "JPEG", quality=85)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="the results, FOLDER/PRESET/PHOTO__PAINTING.png")
    parser.add_argument("out", help="the sheet to write (JPEG)")
    parser.add_argument("presets", nargs="+", help="one row each, in this order")
    parser.add_argument("--photo", help="the photo as a file (its stem names the results)")
    args = parser.parse_args()
    main(args.folder, args.out, args.presets, args.photo)
