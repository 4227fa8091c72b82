"""Checks every runner makes before inference (Polygraphy's BaseRunner.infer does the same)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.core.errors import InputError


def check_feeds(feeds: Mapping[str, np.ndarray], expected: Mapping[str, Sequence]) -> None:
    """Names, dtype float32 and static dims must match; the offending input is named. The batch axis
    is free: runners of a fixed-batch model run any batch in chunks (pipeline.core.onnx_io.run_in_chunks)."""
    if set(feeds) != set(expected):
        raise InputError(f"feeds {sorted(feeds)} do not match the model inputs {sorted(expected)}")
    for name, shape in expected.items():
        array = feeds[name]
        if array.dtype != np.float32:
            raise InputError(f"input {name!r} is {array.dtype}, expected float32")
        if len(array.shape) != len(shape) or array.shape[0] == 0 or any(
                isinstance(d, int) and d > 0 and d != a for d, a in zip(shape[1:], array.shape[1:])):
            raise InputError(f"input {name!r} has shape {list(array.shape)}, model expects {list(shape)}")
