"""Loss curves: the matplotlib figure itself (scale, key, level marks, the median drawn), then its
PNG. Synthetic traces in the Parquet `trace` column's shape; no network, no Ray."""

from __future__ import annotations

import io
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.report.plots import BOUNDARY_GID, loss_figure, loss_png


def make_trace(schedule=((32, 5), (64, 4)), scale: float = 1.0, tv: float = 0.0) -> list[dict]:
    out, iteration = [], 0
    for level, (size, n) in enumerate(schedule):
        for i in range(1, n + 1):
            iteration += 1
            style = scale * 1e5 * math.exp(-i) + 10
            content = scale * 100 * i
            out.append(
                dict(
                    level=level,
                    iteration=iteration,
                    size=size,
                    content=content,
                    style=style,
                    tv=tv,
                    total=content + style + tv,
                )
            )
    return out


def drawn(fig):
    fig.canvas.draw()  # lays out ticks and labels as the PNG will have them
    return fig.axes[0]


def boundaries(ax) -> list[float]:
    return [line.get_xdata()[0] for line in ax.lines if line.get_gid() == BOUNDARY_GID]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_one_pair_has_a_log_axis_labels_ticks_and_a_key():
    ax = drawn(fig := loss_figure([make_trace()]))
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "iteration (all levels)" and "loss" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    # tv is 0 (switched off): a log axis cannot show it, so the key does not list it.
    assert legend_texts(fig) == ["total", "style (weighted)", "content (weighted)"]
    assert fig.legends[0].get_title().get_text() == ""


def test_total_variation_is_keyed_when_it_is_on():
    assert "total variation" in legend_texts(loss_figure([make_trace(tv=3.0)]))


@pytest.mark.parametrize(
    "schedule, expected",
    [(((32, 5),), []), (((32, 5), (64, 4)), [5.5]), (((32, 3), (48, 3), (64, 2)), [3.5, 6.5])],
)
def test_a_dotted_line_ends_each_level_but_the_last_and_each_level_names_its_size(
    schedule, expected
):
    ax = drawn(loss_figure([make_trace(schedule)]))
    assert boundaries(ax) == expected  # levels - 1 lines, between a level's last iteration and
    labels = [t.get_text() for t in ax.texts]  # the next level's first
    assert labels == [f"{size} px" for size, _ in schedule]


def test_the_curve_breaks_at_a_level_boundary_instead_of_joining_the_jump():
    ax = drawn(loss_figure([make_trace()]))
    total = next(line for line in ax.lines if line.get_label() == "total")
    x, y = total.get_xdata(), total.get_ydata()
    gap = int(np.flatnonzero(np.isnan(y))[0])
    assert np.isnan(x[gap]) and list(x[:gap]) == [1, 2, 3, 4, 5]
    assert list(x[gap + 1 :]) == [6, 7, 8, 9] and not np.isnan(y[gap + 1 :]).any()


def test_several_pairs_draw_the_median_with_a_band_and_say_so():
    traces = [make_trace(scale=s) for s in (1.0, 2.0, 4.0)]
    fig = loss_figure(traces)
    ax = drawn(fig)
    total = next(line for line in ax.lines if line.get_label() == "total")
    median = [p["total"] for p in traces[1]]  # scale 2 is the middle one at every iteration
    assert np.allclose(total.get_ydata()[~np.isnan(total.get_ydata())], median)
    assert fig.legends[0].get_title().get_text() == "median of 3 pairs"
    assert legend_texts(fig)[-1] == "range of pairs"
    assert len(ax.collections) == 3  # one band per component drawn
    many = loss_figure([make_trace(scale=1 + i / 10) for i in range(12)])
    assert legend_texts(many)[-1] == "10th-90th pct. of pairs"


def test_no_trace_says_so_instead_of_drawing_empty_axes():
    fig = loss_figure([[], []])
    assert not fig.axes[0].axison
    assert "no loss trace" in fig.axes[0].texts[0].get_text()


def test_png_decodes_at_the_size_asked_for():
    image = Image.open(io.BytesIO(loss_png([make_trace()])))
    assert image.format == "PNG" and image.size == (640, 360)
    double = Image.open(io.BytesIO(loss_png([make_trace()], size=(6.4, 3.0), dpi=200)))
    assert double.size == (1280, 600)


def test_pyplot_stays_unloaded_and_report_imports_no_matplotlib():
    """pyplot's global state would be shared by the web server's threads; matplotlib costs its
    import time only where a plot is drawn."""
    code = (
        "import sys, pipeline.report.summary, pipeline.web.routes.jobs\n"
        "assert 'matplotlib' not in sys.modules\n"
        "from pipeline.report.plots import loss_png\n"
        "loss_png([[dict(level=0, iteration=1, size=32, content=1, style=2, tv=0, total=3)]])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
