"""`nst data fetch`: download and unzip the Kaggle datasets with the `kaggle` package."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from ..core.errors import NSTError
from ..io.extras import require
from ..io.identities import COCO_VAL2017

DATASETS = {
    "artworks": "ikarus777/best-artworks-of-all-time",  # artists.csv, images/, resized/ (~2.3 GB)
    COCO_VAL2017: "awsaf49/coco-2017-dataset",  # the whole of COCO 2017 (~25 GB); val2017 inside
}

HOW_TO_AUTHENTICATE = (
    "no Kaggle credentials found. Provide one of: ~/.kaggle/kaggle.json (or $KAGGLE_CONFIG_DIR/"
    "kaggle.json) from kaggle.com > Settings > API > Create New Token; the environment variables "
    "KAGGLE_USERNAME and KAGGLE_KEY; or KAGGLE_API_TOKEN"
)


class FetchError(NSTError):
    """A download failed; `reason` says why and what to do."""


def has_credentials() -> bool:
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return (config / "kaggle.json").is_file() or (config / "access_token").is_file()


def fetch(name: str, dest: str) -> Path:
    if name not in DATASETS:
        raise FetchError("dataset", f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    require("kaggle")
    if not has_credentials():
        raise FetchError("kaggle", HOW_TO_AUTHENTICATE)
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    banner = io.StringIO()
    try:
        # `import kaggle` authenticates at import time: it prints a banner, and some releases
        # call exit(1) when that fails. Contain both.
        with contextlib.redirect_stdout(banner):
            import kaggle

            kaggle.api.dataset_download_files(
                DATASETS[name], path=str(target), unzip=True, quiet=True
            )
    except SystemExit:
        raise FetchError(
            "kaggle", f"refused the credentials: {_first_line(banner.getvalue())}"
        ) from None
    except Exception as exc:
        raise FetchError(
            DATASETS[name], f"download failed: {type(exc).__name__}: {_first_line(str(exc))}"
        ) from None
    return target


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else "no detail"
