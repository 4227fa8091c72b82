"""Progress for long stages: a tqdm bar in a terminal, silence in CI logs (the stage prints a summary)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield `advance(i)`; draws a bar only when stderr is a terminal."""
    if not interactive():
        yield lambda _i: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, leave=False, file=sys.stderr) as bar:
        yield lambda _i: bar.update(1)
