#!/usr/bin/env bash
# The README's masks picture (jobs/masks.jpg), from the repository's root:
#   bash jobs/masks/make.sh        (~30 s on 2 CPU cores)
# The astronaut (scikit-image) with a hand-drawn colour-keyed mask: red = The Scream (style 1),
# blue = The Starry Night (style 2), black = the photo (her face).
set -euo pipefail
out=runs/masks-demo
mkdir -p "$out"
python - "$out" <<'PY'
import sys
import skimage.data
from PIL import Image, ImageDraw

out = sys.argv[1]
Image.fromarray(skimage.data.astronaut()).save(f"{out}/astronaut.png")
# Drawn by hand on the 512 x 512 photo: the figure as a polygon, her face as an ellipse.
mask = Image.new("RGB", (512, 512), "#0000ff")
draw = ImageDraw.Draw(mask)
figure = [(118, 175), (150, 148), (300, 148), (312, 240), (352, 292), (366, 345), (430, 338),
          (492, 368), (512, 420), (512, 512), (18, 512), (16, 330), (40, 268), (108, 250)]
draw.polygon(figure, fill="#ff0000")
draw.ellipse((150, 12, 304, 192), fill="#000000")
mask.save("jobs/masks/astronaut-mask.png")
PY
art=pipeline/io/demo_artworks/resized/resized
nst stylize "$out/astronaut.png" "$art/Edvard_Munch_1.jpg" "$art/Vincent_van_Gogh_1.jpg" \
    --mask jobs/masks/astronaut-mask.png --mask-regions "#ff0000=1,#0000ff=2,#000000=none" \
    --preset preview -o "$out/astronaut-masked.png"
python - "$out" <<'PY'
import sys
from PIL import Image

out = sys.argv[1]
panels = [f"{out}/astronaut.png", "jobs/masks/astronaut-mask.png", f"{out}/astronaut-masked.png"]
tiles = [Image.open(p).convert("RGB").resize((256, 256), Image.Resampling.LANCZOS) for p in panels]
sheet = Image.new("RGB", (256 * 3 + 8, 256), "white")
for i, tile in enumerate(tiles):
    sheet.paste(tile, (i * 260, 0))
sheet.save("jobs/masks.jpg", quality=88)
PY
echo "wrote jobs/masks.jpg"
