"""A job folder is data anyone with access to the prefix could have written, rows and manifest
alike: the viewers read only within their own configuration (the job's folder, --catalog, the
demo, --allow-source), show one tile for anything they do not show, and bound what they decode."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

from pipeline.io import images
from pipeline.io.demo import demo_catalog
from pipeline.io.schema import RESULT_SCHEMA
from pipeline.io.storage import S3Settings
from pipeline.web.jobs import JobTables

from ..conftest import SilentEndpoint, run_nst
from .conftest import main_settings, peak, reset_peak, serving_on_endpoint

SECRET_COLOUR = (255, 0, 255)  # a private image's pixels: pure magenta, in no job image
PRIVATE = "/srv/private"  # a server path that forged rows carry in their columns
# A painting of the shipped mini catalogue as another checkout of nst recorded it.
ELSEWHERE = "/home/someone/nst/pipeline/io/demo_artworks/resized/resized/Edvard_Munch_1.jpg"


def _rows(job) -> tuple[pa.Table, list]:
    """The job's rows in one part (the others deleted), sorted as the gallery sorts them."""
    parts = sorted((job / "results").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    for part in parts[1:]:
        part.unlink()
    return table, sorted(table.to_pylist(), key=lambda r: (r["content_id"], r["style_id"]))


@pytest.fixture(scope="module")
def forged(finished_job, tmp_path_factory):
    """The gallery job copied under a new --jobs root (its rows still name the old place in
    output_uri, as after a move), its manifest forged to name the whole disk and another bucket as
    its sources, and rows forged: a private image, another bucket, a missing file and a link
    planted in the output as inputs, a private image as a result; a missing file and a
    catalogue painting recorded at another machine's path; server paths in a mask, parameters and
    a traceback. Beside it, a job `flipping` (its manifest as the run wrote it) whose first row
    names a link in its folder that someone keeps flipping. Returns (jobs root, the pairs by role,
    the private image)."""
    root = tmp_path_factory.mktemp("forged")
    secret = root / "private" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (64, 64), SECRET_COLOUR).save(secret)
    jobs = root / "jobs"
    job = jobs / "forged"
    shutil.copytree(finished_job / "gallery", job)
    manifest = json.loads((job / "manifest.json").read_text())
    manifest["spec"]["content"]["source"] = "/"
    manifest["spec"]["styles"]["source"] = "s3://someone-elses-bucket/private"
    (job / "manifest.json").write_text(json.dumps(manifest))
    table, rows = _rows(job)
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    done[0].update(
        content_uri=str(secret),
        style_uri="s3://someone-elses-bucket/private/painting.png",
        output_uri=str(secret),
    )
    done[1]["content_uri"] = str(root / "private" / "missing.png")
    (job / "linked.png").symlink_to(secret)  # a link planted in the output
    done[1]["style_uri"] = str(job / "linked.png")
    done[2].update(
        mask_uri=f"{PRIVATE}/masks/a.png",
        params=json.dumps({"size": 32, "mask": {"uri": f"{PRIVATE}/masks/a.png", "regions": "g"}}),
    )
    failed[0]["traceback"] = f'File "{PRIVATE}/nst/pipeline/x.py", line 1'
    done[3]["content_uri"] = str(finished_job.parent / "c" / "gone.png")  # an allowed folder
    done[3].update(style_id="artworks:resized:claude monet:1", style_uri=f"{PRIVATE}/monet.jpg")
    done[4].update(style_id="demo:artworks:resized:edvard munch:1", style_uri=ELSEWHERE)
    pq.write_table(table.from_pylist(rows, schema=table.schema), sorted(job.glob("results/*"))[0])
    # A job with its own manifest, and a row naming a link in its folder that someone flips.
    flipping = jobs / "flipping"
    shutil.copytree(finished_job / "gallery", flipping)
    table, rows = _rows(flipping)
    flip = flipping / "flip.png"
    flip.symlink_to(flipping / "images" / f"{done[2]['pair_id']}.png")
    rows[0]["content_uri"] = str(flip)
    part = sorted(flipping.glob("results/*"))[0]
    pq.write_table(table.from_pylist(rows, schema=table.schema), part)
    # A second job with a truncated part beside its good ones (a write cut short, a bad copy).
    shutil.copytree(finished_job / "gallery", jobs / "damaged")
    part = sorted((jobs / "damaged" / "results").glob("*.parquet"))[0]
    (part.parent / "part-damaged.parquet").write_bytes(part.read_bytes()[:200])
    roles = {
        "outside": done[0]["pair_id"],
        "missing": done[1]["pair_id"],
        "good": done[2]["pair_id"],
        "catalogue": done[3]["pair_id"],
        "demo": done[4]["pair_id"],
        "flip": rows[0]["pair_id"],
        "failed": failed[0]["pair_id"],
    }
    return jobs, roles, secret


@pytest.fixture(scope="module")
def gallery(forged, finished_job, artworks):
    listener = SilentEndpoint()  # counts the calls made to another bucket
    settings = main_settings(finished_job, artworks)
    with serving_on_endpoint(settings, listener, jobs=str(forged[0])) as url:
        yield url, listener


def _image(url: str, pair_id: str, which: str, job: str = "forged") -> np.ndarray:
    response = requests.get(f"{url}/api/jobs/{job}/pairs/{pair_id}/{which}.png", timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def _shows_secret(picture: np.ndarray) -> bool:
    return bool((picture.reshape(-1, 3) == SECRET_COLOUR).all(1).any())


def test_a_forged_row_or_manifest_shows_one_tile_and_calls_no_bucket(gallery, forged):
    url, listener = gallery
    _, pair, _ = forged
    tiles = [
        _image(url, pair[role], which)
        for role in ("outside", "missing")
        for which in ("content", "style")
    ]
    # A file not there and one that is not an image, both inside an allowed source.
    tiles += [_image(url, pair["catalogue"], "content"), _image(url, pair["failed"], "content")]
    assert not any(_shows_secret(t) for t in tiles)
    # A private file, another bucket, a link out, a missing file, a broken one: one tile, nothing
    # tells them apart.
    assert all(np.array_equal(tiles[0], t) for t in tiles[1:])
    assert listener.connections == 0
    # A result is read where the run wrote it, whatever the row says: the forged row's own
    # picture, and the moved job's results.
    for role in ("outside", "good"):
        result = _image(url, pair[role], "result")
        assert not _shows_secret(result) and not np.array_equal(result, tiles[0])
    for which in ("content", "style"):
        assert not np.array_equal(_image(url, pair["good"], which), tiles[0]), which


def _painting(path, side: int = 256) -> np.ndarray:
    return np.asarray(images.to_pil(images.decode(path.read_bytes(), max_side=side)))


def test_catalogue_paintings_are_found_by_identity_wherever_the_row_recorded_them(
    gallery, forged, artworks
):
    """A job made by another install: its rows name paintings at that machine's paths."""
    url, _ = gallery
    _, pair, _ = forged
    monet = artworks / "resized" / "resized" / "Claude_Monet_1.jpg"  # the server's --catalog
    assert np.array_equal(_image(url, pair["catalogue"], "style"), _painting(monet))
    munch = demo_catalog() + "/resized/resized/Edvard_Munch_1.jpg"  # the shipped mini catalogue
    assert np.array_equal(_image(url, pair["demo"], "style"), _painting(Path(munch)))


FLIP = r"""
import os, sys, time
link, inside, outside, until = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
while time.time() < until:
    for target in (inside, outside):
        os.symlink(target, link + ".new")
        os.replace(link + ".new", link)
"""


def test_a_link_swapped_between_the_check_and_the_read_shows_nothing_outside(gallery, forged):
    """The scope is checked on the file opened, not on the path before opening it."""
    url, pair, secret = gallery[0], forged[1], forged[2]
    link = forged[0] / "flipping" / "flip.png"
    inside = os.readlink(link)
    flipper = subprocess.Popen(
        [sys.executable, "-c", FLIP, str(link), inside, str(secret), str(time.time() + 20)]
    )
    try:
        shown = [
            _shows_secret(_image(url, pair["flip"], "content", job="flipping")) for _ in range(150)
        ]
    finally:
        flipper.wait(timeout=60)
        if os.path.lexists(str(link) + ".new"):
            os.unlink(str(link) + ".new")
    assert not any(shown), f"the secret was shown {sum(shown)} times in 150"


def test_pair_details_carry_no_server_path(gallery, forged):
    url, pair = gallery[0], forged[1]
    for role in ("good", "failed", "outside"):
        answer = requests.get(f"{url}/api/jobs/forged/pairs/{pair[role]}", timeout=60)
        assert answer.status_code == 200, answer.text
        assert PRIVATE not in answer.text and str(forged[2]) not in answer.text, answer.text
        detail = answer.json()
        assert not {"mask_uri", "traceback", "content_uri", "output_uri"} & set(detail)
    good = requests.get(f"{url}/api/jobs/forged/pairs/{pair['good']}", timeout=60).json()
    assert json.loads(good["params"])["mask"] == {"regions": "g"} and len(good["trace"]) == 3


def test_nst_report_shows_no_image_from_outside_the_job(forged):
    jobs, _, _ = forged
    proc = run_nst("report", str(jobs / "forged"))
    assert proc.returncode == 0, proc.stderr
    sheet = np.asarray(Image.open(jobs / "forged" / "report" / "contact_sheet.png").convert("RGB"))
    assert sheet.shape[0] > 6 * 160 and not _shows_secret(sheet)
    # The manifest's sources are named to whoever runs the report, with the way to show them.
    assert "/, s3://someone-elses-bucket/private" in proc.stderr
    assert "--allow-source" in proc.stderr


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


def _bomb(path, rows: int = 300) -> None:
    """A part of a few kB whose `error` repeats one 1 MB string: 300 MB as plain strings."""
    text = "x" * 2**20
    table = pa.Table.from_pylist(
        [{"pair_id": f"{i:020x}", "status": "failed", "error": text} for i in range(rows)],
        schema=RESULT_SCHEMA,
    )
    pq.write_table(table, path, compression="zstd")


@pytest.fixture(scope="module")
def hostile(forged, finished_job):
    """Jobs beside the forged one: a part that decodes to 300 MB, a FIFO for a manifest and one
    for a part, two links under results/ to their own folder, and a row with nothing but its
    pair id and status."""
    jobs = forged[0]
    for name in ("bomb", "fifo", "loops", "bare"):
        shutil.copytree(finished_job / "gallery", jobs / name)
    bare = pa.Table.from_pylist([{"pair_id": "e" * 20, "status": "done"}], schema=RESULT_SCHEMA)
    pq.write_table(bare, jobs / "bare" / "results" / "part-bare.parquet")
    _bomb(jobs / "bomb" / "results" / "part-bomb.parquet")
    assert (jobs / "bomb" / "results" / "part-bomb.parquet").stat().st_size < 30_000
    (jobs / "fifo" / "manifest.json").unlink()
    os.mkfifo(jobs / "fifo" / "manifest.json")
    os.mkfifo(jobs / "fifo" / "results" / "part-fifo.parquet")
    os.symlink(".", jobs / "loops" / "results" / "again")
    os.symlink("../results", jobs / "loops" / "results" / "more")
    return jobs


def test_a_part_that_decodes_to_hundreds_of_mb_is_skipped_from_its_footer(gallery, hostile):
    url, _ = gallery
    before = reset_peak("self")
    page = requests.get(f"{url}/api/jobs/bomb/pairs", timeout=120)
    growth = peak("self") - before
    assert page.status_code == 200, page.text
    assert page.json()["total"] == 8
    assert page.json()["unreadable_parts"] == ["part-bomb.parquet"]
    assert growth < 100 * 2**20, f"+{growth / 2**20:.0f} MB"


def test_fifos_looping_links_and_empty_rows_in_a_job_folder_hold_up_nothing(gallery, hostile):
    url, _ = gallery
    for job, total in (("fifo", 8), ("loops", 8), ("bare", 9)):  # a FIFO, a link: not parts
        started = time.time()
        page = requests.get(f"{url}/api/jobs/{job}/pairs", timeout=60)
        assert page.status_code == 200, page.text
        assert page.json()["total"] == total and page.json()["unreadable_parts"] == []
        assert time.time() - started < 20, job
    assert requests.get(f"{url}/api/config", timeout=10).ok


def test_a_running_jobs_progress_is_read_within_the_same_bounds(gallery, hostile):
    """A job folder whose manifest says "running" has its progress read for the jobs list
    (status, run id and time of each row): within the listing's bounds too, so a part whose
    `run_id` decodes to 300 MB costs the list nothing; the job's other parts still count."""
    url, _ = gallery
    busy = hostile / "busy"
    shutil.copytree(hostile / "bare", busy)
    manifest = json.loads((busy / "manifest.json").read_text())
    (busy / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    text = "x" * 2**20
    rows = [{"pair_id": f"{i:020x}", "status": "done", "run_id": text} for i in range(300)]
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    pq.write_table(table, busy / "results" / "part-bomb.parquet", compression="zstd")
    before = reset_peak("self")
    deadline = time.time() + 30  # the list is read again after REREAD_AFTER
    while True:
        listing = requests.get(f"{url}/api/jobs", timeout=60)
        assert listing.status_code == 200, listing.text
        if "busy" in listing.json()["progress"] or time.time() > deadline:
            break
        time.sleep(1)
    progress = listing.json()["progress"]["busy"]
    assert progress["done"] + progress["failed"] == 9  # the bare job's rows, not the bomb's
    assert peak("self") - before < 100 * 2**20, f"+{(peak('self') - before) / 2**20:.0f} MB"


def test_the_tables_kept_are_bounded(finished_job, tmp_path):
    """The gallery keeps the lists of the jobs most recently looked at, within a byte budget."""
    tables = JobTables(str(finished_job), S3Settings(), cache_bytes=1)
    tables.page("gallery", None, None, 1, 24)
    tables.page("shared", None, None, 1, 24)
    assert list(tables._tables) == ["shared"]  # one job's list is over the budget already
    roomy = JobTables(str(finished_job), S3Settings())
    roomy.page("gallery", None, None, 1, 24)
    roomy.page("shared", None, None, 1, 24)
    assert list(roomy._tables) == ["gallery", "shared"]


def test_the_sources_a_viewer_shows_are_given_on_its_command_line():
    from pipeline.cli.parser import build_parser
    from pipeline.cli.serve import serve_settings

    argv = ["serve", "--allow-source", "data/photos", "--allow-source", "s3://b/contents"]
    settings = serve_settings(build_parser().parse_args(argv))
    assert settings.allow_sources == ("data/photos", "s3://b/contents")
    argv = ["report", "runs/x", "--allow-source", "d", "--catalog", "c"]
    report = build_parser().parse_args(argv)
    assert (report.allow_source, report.catalog) == (["d"], "c")
