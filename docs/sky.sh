#!/usr/bin/env bash
# docs/sky.jpg at every preset in one command, for a GPU machine that fetches nothing (on a lent
# H200 a few minutes in all; on 2 CPU cores the print row alone takes under 2 hours by its former 3.5). It needs
# torch, numpy, pillow and pyyaml there, and in .whl/ the wheels of tests/benchmarks/device_env.sh
# and the photo, made beforehand with scikit-image:
#   .venv/bin/python -c "import skimage.data, PIL.Image as I; \
#       I.fromarray(skimage.data.rocket()).save('.whl/rocket.png')"   # the photo (public domain)
# Writes to $OUT (default /tmp/sky): sky.jpg (the sheet, for docs/), sky_quality.txt (each
# result's per-layer relative Gram errors and content error, for tests/benchmarks/RESULTS.md) and
# the print results at 1024 px to look at. SKY_PRESETS="preview fast" makes fewer rows.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/benchmarks/device_env.sh
source tests/benchmarks/device_env.sh
OUT=${OUT:-/tmp/sky}
PRESETS=${SKY_PRESETS:-preview fast quality print}
PHOTO=.whl/rocket.png
WORK=$(mktemp -d)
mkdir -p "$OUT"
for preset in $PRESETS; do
    "$PY" tests/benchmarks/quality.py --presets "$preset" --photos "$PHOTO" --out "$WORK/$preset" |
        tee -a "$OUT/sky_quality.txt"
done
# shellcheck disable=SC2086  # one argument a preset
"$PY" docs/sky_picture.py "$WORK" "$OUT/sky.jpg" $PRESETS --photo "$PHOTO"
if [ -d "$WORK/print" ]; then
    "$PY" - "$WORK/print" "$OUT" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

for png in sorted(Path(sys.argv[1]).glob("*.png")):
    image = Image.open(png).convert("RGB")
    image.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    image.save(Path(sys.argv[2]) / f"print_{png.stem}.jpg", "JPEG", quality=90)
EOF
fi
ls -la "$OUT"
