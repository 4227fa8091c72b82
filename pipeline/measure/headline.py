"""The headline's rule, one for the benchmark file (pipeline/run/steps/benchmark.py) and the report (pipeline/report/rows.py):
the recommended artifact is the fastest verified target, set against the fastest peer baseline (what a user
gets without the pipeline, pipeline/measure/peers.py).

Fastest: the lowest median batch-1 latency; ties go to the lower mean keypoint drift (unmeasured last), then
to the name, so the pick does not depend on the order the candidates were timed in. A verified target
without a drift (the reference is confident about no keypoint, as with synthetic weights) can be the pick:
it passed every gate of its precision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Optional, TypeVar

T = TypeVar("T")
# (name, median batch-1 latency in ms or None: not timed, mean keypoint drift in px or None: not measured)
Timing = tuple[str, Optional[float], Optional[float]]


def fastest(items: Iterable[T], timing: Callable[[T], Timing]) -> T | None:
    """The fastest of `items` by `timing(item)`; items without a latency are skipped (None if none is timed)."""
    timed = [(timing(item), item) for item in items]
    timed = [(t, item) for t, item in timed if t[1] is not None]
    if not timed:
        return None

    def rank(pair: tuple[Timing, T]) -> tuple:
        (name, latency, drift), _ = pair
        return latency, drift is None, drift or 0.0, name

    return min(timed, key=rank)[1]


def latency_ratio(ours: float, peer: float | None) -> float | None:
    """`ours` / `peer` latency (< 1: ours is faster); None without a peer latency above zero."""
    return ours / peer if peer else None
