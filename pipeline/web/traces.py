"""Loss traces cut to a size a page can draw: a pair may record thousands of points."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

# A 360 px wide chart shows no more; a poll twice a second stays a few kB.
TRACE_POINTS = 200


def thin(points: list[T], limit: int = TRACE_POINTS) -> list[T]:
    """At most `limit` points, evenly spaced, the first and the last kept."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]
