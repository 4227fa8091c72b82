"""Atomic outputs: write into a temporary sibling and rename it onto the final name when complete.

A crash, a failed check or Ctrl-C leaves no half-written artifact where DVC would cache it. A process
killed outright (SIGKILL, the OOM killer, a CI timeout) cannot clean up: its temporary
`<name>.tmp-<host>-<pid>` stays beside the output. DVC never sees it (`.dvcignore` ignores `*.tmp-*`, so
it is neither an output nor part of a directory dependency's hash), and the next write of the same
output removes it once no process of that id runs on this host.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _temporary_prefix(final: Path) -> str:
    return f"{final.name}.tmp-{socket.gethostname()}-"


def _running(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks without signalling)."""
    if os.name != "posix":  # os.kill would terminate the process on Windows; assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(final: str | Path) -> list[Path]:
    """Remove the temporaries of `final` that killed writers on this host left behind; returns them.

    Only `<final>.tmp-<this host>-<pid>` siblings whose process no longer exists: a writer on another
    host sharing the folder (a Ray or Slurm sweep) or one still running keeps its temporary.
    """
    final = Path(final)
    prefix = _temporary_prefix(final)
    if not final.parent.is_dir():
        return []
    stale = [p for p in final.parent.iterdir()
             if p.name.startswith(prefix) and p.name[len(prefix):].isdigit()
             and not _running(int(p.name[len(prefix):]))]
    for path in stale:
        _remove(path)
    return stale


@contextmanager
def atomic_path(final: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield `<final>.tmp-<host>-<pid>` (a fresh directory if `is_dir`); replace `final` with it on success.

    Host and process id keep concurrent sweep jobs that write the same shared output apart. Temporaries
    of `final` that killed processes of this host left are removed first (`remove_stale_temporaries`).
    """
    final = Path(final)
    tmp = final.with_name(f"{_temporary_prefix(final)}{os.getpid()}")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
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
