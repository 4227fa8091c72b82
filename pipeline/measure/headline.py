"""The headline's rule, one for the benchmark file (pipeline/run/steps/benchmark.py) and the report (pipeline/report/rows.py):
the recommended artifact is set against the best peer, the fastest peer baseline (what a user gets without the
pipeline, pipeline/measure/peers.py), on two axes: latency and mean keypoint drift. It is the fastest verified
target whose drift is no worse than that peer's, so a faster pick never buys its speed with accuracy the user
would not lose without us; where the peer's drift is unmeasured, or no verified target is as accurate, it is
the fastest verified target.

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
DRIFT_EPSILON_PX = 1e-6  # drifts this close are equal (both are float32 means over the same keypoints)


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


def recommend(targets: Iterable[T], peers: Iterable[T], timing: Callable[[T], Timing]) -> tuple[T | None, T | None]:
    """(the recommended target, the best peer) by the module's rule; `targets` are the verified ones. None where
    nothing is timed."""
    peer = fastest(peers, timing)
    targets = list(targets)
    bound = timing(peer)[2] if peer is not None else None
    if bound is not None:
        accurate = [t for t in targets if timing(t)[2] is not None and timing(t)[2] <= bound + DRIFT_EPSILON_PX]
        pick = fastest(accurate, timing)
        if pick is not None:
            return pick, peer
    return fastest(targets, timing), peer


def latency_ratio(ours: float, peer: float | None) -> float | None:
    """`ours` / `peer` latency (< 1: ours is faster); None without a peer latency above zero."""
    return ours / peer if peer else None
