"""`nst report`'s HTML page from its rows: what it counts, and that no value becomes markup.
(The whole command on a real job: tests/web/test_api.py.)"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from pipeline.io.quality import POOR_TRANSFER
from pipeline.io.schema import QUALITY_COLUMNS
from pipeline.report.summary import summary_html

SCRIPT = "<script>alert(1)</script>"


def row(pair_id: str, status: str = "done", **kw) -> dict:
    base = dict(
        pair_id=pair_id,
        status=status,
        content_id="a.png",
        style_id="s.png",
        artist="Claude Monet",
        genre="Impressionism",
        error=None,
        loss_total=1234.5 if status == "done" else None,
        seconds=2.25 if status == "done" else None,
    )
    return {**base, **kw}


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [v for k, v in attrs if k == "href"]


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def test_counts_statuses_artists_and_genres():
    rows = [
        row("a" * 20),
        row("b" * 20, artist="Edvard Munch", genre="Expressionism, Symbolism"),
        row("c" * 20, "failed", error="c.png: not an image"),
    ]
    page = summary_html("demo", rows, sheet=1)
    assert "3 pairs: 2 done, 1 failed" in page
    assert "<li>Claude Monet: 1</li>" in page and "<li>Symbolism: 1</li>" in page
    assert "failed: c.png: not an image" in page and "1.23e+03" in page and "2.2" in page
    assert "first 1" in page  # the contact sheet shows fewer pairs than finished
    assert parse(page).hrefs == [f"../images/{'a' * 20}.png", f"../images/{'b' * 20}.png"]


def test_hostile_names_come_out_as_text():
    """A file name, an artist, an error, a job name and a pair id holding markup (a shared
    results prefix anyone can write to) are escaped, never parsed as tags."""
    rows = [
        row('x"><script>alert(1)</script>', content_id=SCRIPT, artist=SCRIPT, genre=SCRIPT),
        row("y" * 20, "failed", style_id=SCRIPT, error=f"{SCRIPT}: not an image"),
    ]
    figures = {"note": SCRIPT}
    page = summary_html(SCRIPT, rows, figures)
    assert "script" not in parse(page).tags
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert parse(page).hrefs == ["../images/x%22%3E%3Cscript%3Ealert%281%29%3C/script%3E.png"]


def test_domain_figures_are_shown_with_their_sample():
    figures = {
        "outputs": 4,
        "contents": 2,
        "paintings": 2,
        "feature_side": 64,
        "mmd2_outputs_to_paintings": 0.01234,
        "mmd2_contents_to_paintings": 0.5,
    }
    page = summary_html("demo", [row("a" * 20)], figures)
    assert "on\n4 outputs, 2 contents and 2 paintings" in page
    assert "stylized outputs: 0.0123" in page and "original contents: 0.5000" in page


def test_pairs_whose_palette_did_not_transfer_are_flagged():
    good = {c: 0.05 for c in QUALITY_COLUMNS.values()}
    rows = [
        row("a" * 20, **good),
        row("b" * 20, **{**good, "gram_error_relu1_1": POOR_TRANSFER * 2}),
        row("c" * 20),  # written before the measure existed: not flagged, not listed
    ]
    page = summary_html("demo", rows)
    assert "1 of 3 finished pairs" in page
    worst = page[page.index("<h2>Quality</h2>") : page.index("<h2>By artist</h2>")]
    assert worst.index("b" * 20) < worst.index("a" * 20) and "c" * 20 not in worst
    assert f"{POOR_TRANSFER * 2:.3g} (poor transfer)" in page


def test_contact_sheet_captions_sit_under_their_photo(tmp_path):
    """Every caption starts within a few pixels of its line's photo, also where a tall painting
    beside it makes the line taller (it floated a whole thumbnail below short lines before), and
    a line is no taller than its tallest part."""
    import numpy
    import torch

    from pipeline.io import images
    from pipeline.job.scope import JobScope
    from pipeline.report.summary import GAP, THUMB, contact_sheet

    def solid(name: str, h: int, w: int, rgb: tuple[float, float, float]) -> str:
        path = tmp_path / f"{name}.png"
        images.save_png(torch.tensor(rgb).view(3, 1, 1).expand(3, h, w), path)
        return str(path)

    wide = solid("wide", 60, 90, (0.9, 0.2, 0.2))  # a thumbnail as it is
    tall = solid("tall", 200, 80, (0.2, 0.3, 0.9))  # a thumbnail 64 x 160
    uris = {"content_uri": wide, "output_uri": wide}
    rows = [
        row("a" * 20, style_uri=tall, **uris),
        row("b" * 20, style_uri=wide, **uris),
        row("c" * 20, style_uri=tall, **uris),
    ]
    for r in rows:  # a result is read where its run wrote it, the job's own images/
        (tmp_path / "job" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "job" / "images" / f"{r['pair_id']}.png").write_bytes(Path(wide).read_bytes())
    scope = JobScope.of(str(tmp_path), "job", sources=(str(tmp_path),))
    sheet = contact_sheet(rows, scope).convert("RGB")
    pixels = torch.from_numpy(numpy.asarray(sheet).astype("int32"))  # (H, W, 3)
    photo = pixels[:, GAP : GAP + THUMB]  # the content column: photos and captions
    grey = (photo - photo[..., :1]).abs().sum(-1) < 10
    text = (grey & (photo[..., 0] < 160)).any(1)  # lines holding caption ink
    colour = ~grey.all(1)  # lines holding a photo
    captions = [y for y in range(1, sheet.height) if text[y] and not text[y - 1]]
    captions = [y for y in captions if not text[y - 4 : y].any()]  # a caption's first line
    bottoms = [y for y in range(sheet.height - 1) if colour[y] and not colour[y + 1]]
    tops = [y for y in range(1, sheet.height) if colour[y] and not colour[y - 1]]
    assert len(captions) == len(bottoms) == 3
    assert all(0 < c - b <= GAP for b, c in zip(bottoms, captions, strict=True))
    assert tops[1] - tops[0] == THUMB + GAP  # after the tall painting's line
    assert tops[2] - tops[1] < THUMB  # the short line is no taller than its parts
