"""Makes docs/strengths.jpg: one photo crossed with the shipped paintings at strengths 0.25, 0.5,
0.75 and 1, so that a user picks the knob by eye. From the repository root (about a minute and a
half at the preview preset on 2 CPU cores):

    .venv/bin/python docs/strengths_picture.py docs/strengths.jpg

The photo (scikit-image's rocket, public domain: docs/NOTICE) heads the sheet; then a row per
painting: the painting, then its results from the lightest touch to the painting's statistics
alone. Every other parameter is the preset's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.core.engine import Stylizer
from pipeline.io import images
from pipeline.job.presets import load_preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sky_picture import PAINTINGS, TILE, fitted, rocket  # noqa: E402

STRENGTHS = (0.25, 0.5, 0.75, 1.0)


def main(out: str, preset: str) -> None:
    photo = rocket()
    params = load_preset(preset)
    content = images.from_array(np.asarray(photo), name="rocket", max_side=params.size)
    stylizer = Stylizer()
    rows: list[list[Image.Image]] = [[photo]]
    for path in PAINTINGS:
        painting = images.load(path, max_side=params.style_side)
        results = [
            stylizer.stylize(content, [painting], params=params.replace(strength=s)).image
            for s in STRENGTHS
        ]
        rows.append([Image.open(path)] + [images.to_pil(r) for r in results])
    width = (len(STRENGTHS) + 1) * (TILE + 8)
    fitted_rows = [[fitted(i) for i in row] for row in rows]
    heights = [max(i.height for i in row) for row in fitted_rows]
    sheet = Image.new("RGB", (width, 20 + sum(h + 8 for h in heights)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), "photo, then the paintings", fill=(40, 40, 40))
    for j, strength in enumerate(STRENGTHS, start=1):
        draw.text((j * (TILE + 8) + 4, 4), f"strength {strength:g}", fill=(40, 40, 40))
    y = 20
    for row, height in zip(fitted_rows, heights, strict=True):
        for j, image in enumerate(row):
            sheet.paste(image, (j * (TILE + 8), y))
        y += height + 8
    sheet.save(out, "JPEG", quality=85)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the sheet to write (JPEG)")
    parser.add_argument("--preset", default="preview", help="the preset (default: preview)")
    args = parser.parse_args()
    main(args.out, args.preset)
