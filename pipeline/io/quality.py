"""Whether a done row's style transferred, judged from its quality columns."""

from __future__ import annotations

from typing import Any

from ..core.taps import STYLE_LAYERS
from .schema import QUALITY_COLUMNS

# A row whose largest relative Gram error is above this did not take the painting's statistics:
# the report and the gallery flag it. The threshold sits between the finished pairs of the presets
# and a photo left as it was (tests/benchmarks/RESULTS.md, Quality).
POOR_TRANSFER = 0.35


def worst_gram_error(row: dict[str, Any]) -> float | None:
    """The largest relative Gram error of a row (None for rows without the measure)."""
    found = (row.get(QUALITY_COLUMNS[n]) for n in STYLE_LAYERS)
    values = [float(v) for v in found if v is not None and v == v]  # NaN: pandas' None
    return max(values) if values else None


def poor_transfer(row: dict[str, Any]) -> bool:
    """Whether a done row's style did not transfer (POOR_TRANSFER)."""
    worst = worst_gram_error(row)
    return worst is not None and worst > POOR_TRANSFER
