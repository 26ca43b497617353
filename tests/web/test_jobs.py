"""A results row written by someone with access to the prefix: the viewers read only inside the
job (its output, its recorded sources, the catalogue)."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

from ..conftest import SilentEndpoint, run_nst
from .conftest import main_settings, serving_on_endpoint

SECRET_COLOUR = (255, 0, 255)  # a private image's pixels: pure magenta, in no job image


@pytest.fixture(scope="module")
def forged(finished_job, tmp_path_factory):
    """The gallery job copied under a new --jobs root (its rows still name the old place in
    output_uri, as after a move), with forged rows: a private image, another bucket, a missing
    file and a link planted in the output as inputs, a private image as a result. Returns (jobs
    root, forged pair ids, a good pair id)."""
    root = tmp_path_factory.mktemp("forged")
    secret = root / "private" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (64, 64), SECRET_COLOUR).save(secret)
    jobs = root / "jobs"
    shutil.copytree(finished_job / "gallery", jobs / "forged")
    results = jobs / "forged" / "results"
    parts = sorted(results.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    for part in parts[1:]:
        part.unlink()
    rows = sorted(table.to_pylist(), key=lambda r: (r["content_id"], r["style_id"]))
    done = [r for r in rows if r["status"] == "done"]
    done[0].update(
        content_uri=str(secret),
        style_uri="s3://someone-elses-bucket/private/painting.png",
        output_uri=str(secret),
    )
    done[1]["content_uri"] = str(root / "private" / "missing.png")
    (jobs / "forged" / "linked.png").symlink_to(secret)  # a link planted in the output
    done[1]["style_uri"] = str(jobs / "forged" / "linked.png")
    pq.write_table(table.from_pylist(rows, schema=table.schema), parts[0])
    # A second job with a truncated part beside its good ones (a write cut short, a bad copy).
    shutil.copytree(finished_job / "gallery", jobs / "damaged")
    part = sorted((jobs / "damaged" / "results").glob("*.parquet"))[0]
    (part.parent / "part-damaged.parquet").write_bytes(part.read_bytes()[:200])
    return jobs, (done[0]["pair_id"], done[1]["pair_id"]), done[2]["pair_id"]


@pytest.fixture(scope="module")
def gallery(forged, finished_job, artworks):
    listener = SilentEndpoint()  # counts the calls made to another bucket
    settings = main_settings(finished_job, artworks)
    with serving_on_endpoint(settings, listener, jobs=str(forged[0])) as url:
        yield url, listener


def _image(url: str, pair_id: str, which: str) -> np.ndarray:
    response = requests.get(f"{url}/api/jobs/forged/pairs/{pair_id}/{which}.png", timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def _shows_secret(picture: np.ndarray) -> bool:
    return bool((picture.reshape(-1, 3) == SECRET_COLOUR).all(1).any())


def test_a_forged_row_shows_outside_this_job_tiles_and_calls_no_bucket(gallery, forged):
    url, listener = gallery
    _, (first, second), good = forged
    tiles = [_image(url, pair, which) for pair in (first, second) for which in ("content", "style")]
    assert not any(_shows_secret(t) for t in tiles)
    # A private file, another bucket, a missing file, a link out: one tile, nothing tells them
    # apart.
    assert all(np.array_equal(tiles[0], t) for t in tiles[1:])
    assert listener.connections == 0
    # A result is read where the run wrote it, whatever the row says: the forged row's own
    # picture, and the moved job's results.
    for pair in (first, good):
        result = _image(url, pair, "result")
        assert not _shows_secret(result) and not np.array_equal(result, tiles[0])
    for which in ("content", "style"):
        assert not np.array_equal(_image(url, good, which), tiles[0]), which


def test_nst_report_shows_no_image_from_outside_the_job(forged):
    jobs = forged[0]
    proc = run_nst("report", str(jobs / "forged"))
    assert proc.returncode == 0, proc.stderr
    sheet = np.asarray(Image.open(jobs / "forged" / "report" / "contact_sheet.png").convert("RGB"))
    assert sheet.shape[0] > 6 * 160 and not _shows_secret(sheet)


def test_viewers_skip_an_unreadable_part_report_it_and_leave_it_in_place(gallery, forged):
    """Only a run that holds the output's lock sets parts aside: a GET (an <img> on another site
    can send one) and `nst report` change nothing."""
    url, _ = gallery
    job = forged[0] / "damaged"
    bad = job / "results" / "part-damaged.parquet"
    data = bad.read_bytes()
    page = requests.get(f"{url}/api/jobs/damaged/pairs", timeout=60).json()
    assert page["total"] == 8 and page["unreadable_parts"] == ["part-damaged.parquet"]
    pair_id = next(p["pair_id"] for p in page["pairs"] if p["status"] == "done")
    image = requests.get(f"{url}/api/jobs/damaged/pairs/{pair_id}/result.png", timeout=60)
    assert image.status_code == 200
    proc = run_nst("report", str(job))
    assert proc.returncode == 0, proc.stderr
    text = (job / "report" / "index.html").read_text()
    assert "1 results part could not be read and was skipped: part-damaged.parquet" in text
    assert bad.read_bytes() == data and not (job / "corrupt").exists()
