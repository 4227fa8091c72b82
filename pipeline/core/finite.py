"""Non-finite values (NaN, ±Inf) in named arrays, said in one line: weights at load, reference outputs."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SHOWN = 3  # names listed before "+N more"


def non_finite(named: Iterable[tuple[str, np.ndarray]]) -> str:
    """'' when every floating array is finite, else e.g. "head.mlp.1.weight (12 NaN), neck.w (1 Inf) (+2 more)".

    `named`: (name, array) pairs of any shape; integer and boolean arrays are skipped (always finite).
    """
    found = []
    for name, array in named:
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.floating) or np.all(np.isfinite(array)):
            continue
        nan = int(np.count_nonzero(np.isnan(array)))
        inf = int(np.count_nonzero(np.isinf(array)))
        counts = ", ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "Inf")) if n)
        found.append(f"{name} ({counts} of {array.size})")
    if not found:
        return ""
    more = f" (+{len(found) - SHOWN} more)" if len(found) > SHOWN else ""
    return ", ".join(found[:SHOWN]) + more
