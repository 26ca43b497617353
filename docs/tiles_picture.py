"""Makes docs/tiles.jpg from a tiled `nst stylize` result (issue 19). From the repository root:

    .venv/bin/python -c "from pipeline.io import images; from pipeline.io.demo import demo_image; \
images.save_png(demo_image('astronaut'), 'astronaut.png')"
    .venv/bin/nst stylize astronaut.png \
        pipeline/io/demo_artworks/resized/resized/Vincent_van_Gogh_1.jpg -o tiles768.png \
        --preset print --schedule 192:50,384:25,768:10 --tile 384 --device cpu
    .venv/bin/python docs/tiles_picture.py tiles768.png docs/tiles.jpg

The result at half size | a 1:1 crop centred where the unshifted grid's tile borders cross
(384, 384), marked by red ticks outside the crop.
"""

from __future__ import annotations

import sys

from PIL import Image, ImageDraw


def main(src: str, out: str) -> None:
    image = Image.open(src).convert("RGB")  # 768 x 768
    sheet = Image.new("RGB", (384 * 2 + 8, 384 + 8), "white")
    sheet.paste(image.resize((384, 384), Image.LANCZOS), (0, 0))
    sheet.paste(image.crop((192, 192, 576, 576)), (392, 0))  # 1:1
    draw = ImageDraw.Draw(sheet)
    draw.rectangle((392 + 191, 385, 392 + 192, 391), fill="red")  # x = 384 in the image
    draw.rectangle((385, 191, 391, 192), fill="red")  # y = 384
    draw.rectangle((96, 96, 288, 288), outline="red")  # the crop's place
    sheet.save(out, "JPEG", quality=85)


if __name__ == "__main__":
    main(*sys.argv[1:3])
