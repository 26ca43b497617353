"""Loss curves drawn by matplotlib, for `nst report` and the web app's job gallery.

A trace is the list of records a pair's `trace` column holds: {level, iteration, size, content,
style, tv, total}. One trace gives that pair's curves; several (one job) give each component's
median over the pairs with a band for their spread.

Figures use the `Figure` API on an Agg canvas, never pyplot: pyplot's global figure registry
would be shared by the web server's threads. Since matplotlib 3.8 `Figure.draw` takes a lock
shared by all renderers (matplotlib PR #26302), so independent figures may render at once.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Trace = Sequence[Mapping[str, Any]]

# The weighted terms of the objective (total = content + style + tv), in the key's order.
COMPONENTS = {
    "total": ("total", "#222222"),
    "style": ("style (weighted)", "#d9480f"),
    "content": ("content (weighted)", "#1c7ed6"),
    "tv": ("total variation", "#2b8a3e"),
}
# With this many pairs or more the band is the 10th-90th percentile; below, the full range
# (percentiles of three or four pairs would be interpolations between them).
PERCENTILE_FROM = 10
BOUNDARY_GID = "level-boundary"  # tests count these lines
SIZE = (6.4, 3.6)  # inches; at 100 dpi the 640 x 360 px the report page shows


def loss_figure(traces: Sequence[Trace], *, size: tuple[float, float] = SIZE) -> Figure:
    """Loss against iteration on a log axis, one curve per component, a dotted line where a
    level of the schedule ends, each level's side in px above its span."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)  # explicit: no display, whatever $MPLBACKEND says
    ax = fig.add_subplot()
    traces = [t for t in traces if len(t)]
    if not traces:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no loss trace (no finished pair)", ha="center", va="center")
        return fig

    iterations = sorted({int(p["iteration"]) for t in traces for p in t})
    column = {it: i for i, it in enumerate(iterations)}
    # Break the line between levels: the loss jumps when the image is upsampled.
    gaps = [it + 0.5 for it in _level_ends(traces[0])]
    x = np.insert(np.array(iterations, dtype=float), np.searchsorted(iterations, gaps), np.nan)
    several = len(traces) > 1
    for key, (label, color) in COMPONENTS.items():
        values = np.full((len(traces), len(iterations)), np.nan)  # (pairs, iterations)
        for row, trace in enumerate(traces):
            for p in trace:
                values[row, column[int(p["iteration"])]] = p[key]
        values[~(values > 0)] = np.nan  # a log axis shows no zeros (tv is 0 when switched off)
        if np.isnan(values).all():
            continue
        with warnings.catch_warnings():  # an iteration no pair has a positive value for
            warnings.simplefilter("ignore", RuntimeWarning)
            middle = np.nanmedian(values, axis=0)
            if several:
                q = (10, 90) if len(traces) >= PERCENTILE_FROM else (0, 100)
                low, high = np.nanpercentile(values, q, axis=0)
        ax.plot(
            x,
            _with_gaps(middle, iterations, gaps),
            color=color,
            label=label,
            linewidth=2 if key == "total" else 1.4,
        )
        if several:
            ax.fill_between(
                x,
                _with_gaps(low, iterations, gaps),
                _with_gaps(high, iterations, gaps),
                color=color,
                alpha=0.15,
                linewidth=0,
            )
    _mark_levels(ax, traces[0], gaps)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(iterations[0] - 0.5, iterations[-1] + 0.5)
    ax.set_xlabel("iteration (all levels)")
    ax.set_ylabel("loss (log scale)")
    ax.grid(True, which="major", color="#e5e5e5", linewidth=0.8)
    handles, _ = ax.get_legend_handles_labels()
    title = None
    if several:
        title = f"median of {len(traces)} pairs"
        spread = "10th-90th pct." if len(traces) >= PERCENTILE_FROM else "range"
        handles.append(Patch(color="#222222", alpha=0.15, label=f"{spread} of pairs"))
    fig.legend(
        handles=handles,
        title=title,
        loc="outside right upper",
        frameon=False,
        fontsize="small",
        title_fontsize="small",
        alignment="left",
    )
    return fig


def to_png(fig: Figure, dpi: float = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def loss_png(
    traces: Sequence[Trace], *, size: tuple[float, float] = SIZE, dpi: float = 100
) -> bytes:
    return to_png(loss_figure(traces, size=size), dpi=dpi)


def _level_ends(trace: Trace) -> list[int]:
    """The last recorded iteration of every level but the last."""
    return [
        int(p["iteration"])
        for p, q in zip(trace, trace[1:], strict=False)
        if q["level"] != p["level"]
    ]


def _with_gaps(values: Any, iterations: list[int], gaps: list[float]) -> Any:
    import numpy as np

    return np.insert(values, np.searchsorted(iterations, gaps), np.nan)


def _mark_levels(ax: Any, trace: Trace, gaps: list[float]) -> None:
    """A dotted line at each level boundary; each level's side in px at the top of its span."""
    sizes = [trace[0]["size"]] + [
        q["size"] for p, q in zip(trace, trace[1:], strict=False) if q["level"] != p["level"]
    ]
    starts = [trace[0]["iteration"] - 0.5, *gaps]
    for x in gaps:
        ax.axvline(x, color="#868e96", linestyle=":", linewidth=1, gid=BOUNDARY_GID)
    for x, side in zip(starts, sizes, strict=True):
        # Above the frame: inside it, the label would sit on the curve's start.
        ax.annotate(
            f"{side} px",
            (x, 1),
            xycoords=ax.get_xaxis_transform(),
            xytext=(2, 2),
            textcoords="offset points",
            va="bottom",
            fontsize="small",
            color="#495057",
        )
