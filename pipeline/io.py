"""Atomic outputs: write into a temporary sibling and rename it onto the final name when complete.

A crash, a failed check or Ctrl-C leaves no half-written artifact where DVC would cache it.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(final: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield `<final>.tmp-<pid>` (a fresh directory if `is_dir`); replace `final` with it on success.

    The process id keeps concurrent sweep jobs that write the same shared output apart.
    """
    final = Path(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove(tmp)
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        raise FileNotFoundError(f"{tmp} was not written")
    for attempt in range(3):
        _remove(final)
        try:
            os.replace(tmp, final)
            return
        except OSError:  # a concurrent sweep job put the same directory there in between
            if attempt == 2:
                _remove(tmp)
                raise


def remove_outputs(*paths: str | Path) -> None:
    """Delete stale outputs before a stage runs, so a failure cannot leave an old file looking current."""
    for path in paths:
        _remove(Path(path))


def write_json(path: str | Path, data: Any) -> None:
    """Sorted keys and a trailing newline: stable bytes for DVC metrics and metadata."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """Like numpy.savez, but with fixed zip timestamps so equal arrays give equal bytes."""
    import io
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in sorted(arrays):
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(arrays[name]), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                                 buffer.getvalue())


def read_npz(path: str | Path) -> dict[str, Any]:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
