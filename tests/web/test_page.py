"""The page in a real browser (Chromium): upload, drag and drop, pick a painting, watch the
preview change, download; browse a job. Each view's screenshot is saved (see `screenshots`)."""

from __future__ import annotations

import base64
import io

import requests
from PIL import Image

from pipeline.io import images

from ..conftest import make_content, make_style
from .conftest import HOSTILE_TEXT, png

NO_BROKEN_IMAGES = """() => [...document.images]
    .filter((i) => i.offsetParent !== null)
    .every((i) => i.complete && i.naturalWidth > 0)"""
# Records every preview the page shows, so that a test can tell the picture changed.
RECORD_PREVIEWS = """() => {
    window.previews = new Set();
    new MutationObserver(() => window.previews.add(document.getElementById('preview').src))
        .observe(document.getElementById('preview'), { attributes: true });
}"""
DROP = """([selector, name, b64]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([bytes], name, { type: 'image/png' }));
    document.querySelector(selector).dispatchEvent(
        new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
}"""


def _fits_width(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_page_stylizes_with_drop_and_catalogue_and_downloads(
    server, browser, screenshots, tmp_path
):
    images.save_png(make_content(40, 56), tmp_path / "photo.png")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server)
    page.wait_for_selector("#artist-pick option:nth-child(2)", state="attached")
    assert page.is_visible("#result-empty") and page.evaluate(NO_BROKEN_IMAGES)
    page.screenshot(path=str(screenshots / "stylize-empty.png"), full_page=True)

    page.set_input_files("#content", str(tmp_path / "photo.png"))
    page.wait_for_function("() => document.getElementById('content-thumb').naturalWidth === 56")
    page.evaluate(
        DROP, ["#drop-styles", "dropped.png", base64.b64encode(png(make_style(48, 48))).decode()]
    )
    page.wait_for_selector("#style-list li")
    page.select_option("#artist-pick", "Claude Monet")
    page.click("#painting-grid button >> nth=1")
    assert page.locator("#style-list li").count() == 2
    assert page.get_attribute("#painting-grid button >> nth=1", "aria-pressed") == "true"
    page.wait_for_function(NO_BROKEN_IMAGES)

    page.fill("#size", "48")
    page.fill("#iterations", "400")
    # The strength slider: its value is shown beside it and sent with the form.
    page.evaluate(
        "() => { const s = document.getElementById('strength'); s.value = '0.7';"
        " s.dispatchEvent(new Event('input')); }"
    )
    assert page.inner_text("#strength-value") == "0.7"
    page.evaluate(RECORD_PREVIEWS)
    page.click("#go")
    page.wait_for_selector("#preview", state="visible", timeout=120_000)
    page.screenshot(path=str(screenshots / "stylize-running.png"), full_page=True)
    page.wait_for_selector("#result", state="visible", timeout=180_000)
    page.wait_for_function("() => document.getElementById('result').naturalWidth === 48")
    assert page.evaluate("window.previews.size") >= 2  # the picture changed while it formed
    assert "done in" in page.inner_text("#progress")
    page.screenshot(path=str(screenshots / "stylize-done.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#download")
    saved = download.value.path()
    assert download.value.suggested_filename.startswith("nst-")
    assert Image.open(io.BytesIO(saved.read_bytes())).size == (48, 34)

    page.set_viewport_size({"width": 390, "height": 844})
    assert _fits_width(page)
    page.screenshot(path=str(screenshots / "stylize-phone.png"), full_page=True)

    # A bad upload: the page says why.
    (tmp_path / "notes.png").write_text("not an image")
    page.set_input_files("#content", str(tmp_path / "notes.png"))
    page.click("#go")
    page.wait_for_function("() => document.getElementById('error').textContent.length > 0")
    assert "content: not an image" in page.inner_text("#error")
    page.close()


# Each control's top and its label's, and the slider's parts' vertical centres.
CONTROL_ROWS = """() => {
    const box = (s) => document.querySelector(s).getBoundingClientRect();
    const mid = (r) => Math.round(r.top + r.height / 2);
    const label = (s) => document.querySelector(s).closest('label').getBoundingClientRect();
    return {
        tops: ['#preset', '.slider', '#size', '#color'].map((s) => Math.round(box(s).top)),
        labels: ['#preset', '.slider', '#size'].map((s) => Math.round(label(s).top)),
        parts: ['.slider .caption', '#strength', '.slider .caption ~ .caption', '#strength-value']
            .map((s) => mid(box(s))),
    };
}"""


def test_the_strength_slider_is_laid_out_as_the_other_controls(server, browser):
    """The slider and its "photo" and "painting" ends on one line, its box and its label level
    with the other controls' (they stacked above and below it before), at a desktop's width and a
    phone's; it starts at the default strength the server reports."""
    default = requests.get(f"{server}/api/config", timeout=30).json()["strength"]
    for width in (1280, 390):
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(server)
        page.wait_for_function("() => document.getElementById('strength-value').textContent")
        rows = page.evaluate(CONTROL_ROWS)
        assert max(rows["parts"]) - min(rows["parts"]) <= 2, rows  # one line
        if width > 800:  # one row of controls
            assert max(rows["tops"]) - min(rows["tops"]) <= 1, rows
            assert max(rows["labels"]) - min(rows["labels"]) <= 1, rows
        assert float(page.input_value("#strength")) == default
        assert page.inner_text("#strength-value") == str(default)
        page.close()


def test_page_is_usable_by_keyboard(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "tab-jobs"
    page.keyboard.press("Enter")
    page.wait_for_selector("#gallery .card")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    assert page.is_visible("#view-stylize") and not page.is_visible("#view-jobs")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "content"  # the drop zone's input
    page.close()


def test_page_browses_a_jobs_gallery(server, browser, screenshots):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server)
    page.click("#tab-jobs")
    page.wait_for_selector("#gallery .card")
    assert page.locator("#gallery .card").count() == 8
    assert page.inner_text("#total") == "8 pairs"
    page.select_option("#status", "failed")
    page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 2")
    page.select_option("#status", "done")
    page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 6")
    page.wait_for_function(NO_BROKEN_IMAGES)
    page.screenshot(path=str(screenshots / "jobs.png"), full_page=True)
    page.click("#gallery .card >> nth=0")
    page.wait_for_selector("#detail[open]")
    page.wait_for_function(NO_BROKEN_IMAGES)
    # The finished pair's curves: the server's matplotlib drawing, as in `nst report`.
    assert page.is_visible("#pair-losses")
    assert page.evaluate("document.getElementById('pair-losses').naturalWidth") == 1760
    # Its quality measure: the relative content error and each style layer's Gram error.
    assert "errors: content_error" in page.inner_text("#detail-info")
    assert "relu1_1" in page.inner_text("#detail-info")
    page.screenshot(path=str(screenshots / "jobs-detail.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")

    # A results part with markup in its strings shows the markup as text, and runs nothing.
    page.select_option("#status", "")
    page.select_option("#job", "shared")
    page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 9")
    assert HOSTILE_TEXT in page.inner_text("#gallery")
    assert page.title() == "nst: neural style transfer"
    assert page.evaluate("[...document.images].every((i) => i.getAttribute('src') !== 'x')")

    page.set_viewport_size({"width": 390, "height": 844})
    page.select_option("#job", "gallery")
    page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 8")
    assert _fits_width(page)
    page.screenshot(path=str(screenshots / "jobs-phone.png"))
    page.close()


def test_page_stylizes_with_a_mask(server, browser, screenshots, tmp_path):
    """The optional mask: chosen in the content pane, sent with the form; black keeps the photo."""
    images.save_png(make_content(40, 56), tmp_path / "photo.png")
    images.save_png(make_style(48, 48), tmp_path / "style.png")
    mask = make_content(40, 56) * 0
    mask[:, :, 28:] = 1  # white right half: styled
    images.save_png(mask, tmp_path / "mask.png")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server)
    page.set_input_files("#content", str(tmp_path / "photo.png"))
    page.set_input_files("#styles", str(tmp_path / "style.png"))
    page.click(".mask summary")
    page.set_input_files("#mask", str(tmp_path / "mask.png"))
    page.wait_for_function("() => document.getElementById('mask-thumb').naturalWidth === 56")
    page.fill("#size", "48")
    page.fill("#iterations", "12")
    page.click("#go")
    page.wait_for_selector("#result", state="visible", timeout=180_000)
    page.wait_for_function("() => document.getElementById('result').naturalWidth === 48")
    page.screenshot(path=str(screenshots / "stylize-mask.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#download")
    out = images.decode(download.value.path().read_bytes())
    photo = images.load(tmp_path / "photo.png", max_side=48)
    change = (out - photo).abs().mean(0)  # (34, 48)
    assert float(change[:, :20].max()) <= 1 / 255 and float(change[:, 28:].mean()) > 0.02

    page.fill("#mask_regions", "#ff0000=1")  # a greyscale mask under a colour mapping
    page.click("#go")
    page.wait_for_function("() => document.getElementById('error').textContent.length > 0")
    assert "mask: 100.0% of its pixels match no colour" in page.inner_text("#error")
    page.close()
