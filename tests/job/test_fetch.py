"""`nst data fetch` never needs real credentials in tests and never shows a traceback."""

from __future__ import annotations

import os
import subprocess

from ..conftest import run_nst


def fetch(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    clean.update(HOME=str(tmp_path), **env)
    return run_nst("data", "fetch", "artworks", "--dest", str(tmp_path / "dest"), env=clean)


def test_no_credentials_says_how_to_provide_them(tmp_path):
    proc = fetch(tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for hint in ("kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        assert hint in proc.stderr


def test_unreachable_kaggle_is_a_clear_error(tmp_path):
    # Credentials present but no route: the proxy on port 9 refuses at once.
    proc = fetch(
        tmp_path,
        KAGGLE_USERNAME="someone",
        KAGGLE_KEY="0" * 32,
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "nst: error: ikarus777/best-artworks-of-all-time: download failed"
    )
    assert "0" * 32 not in proc.stderr + proc.stdout
