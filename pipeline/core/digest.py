"""sha256 digests of files and of artifact folders: what binds a verdict to the bytes it judged."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks. Raises OSError for an unreadable file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digests(root: str | Path) -> dict[str, str]:
    """{relative POSIX path: sha256} of every file under `root` (a folder, recursively), sorted by path;
    {} for a missing folder. Links are followed as the runtimes that open the files would."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def changed_files(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """The paths whose digest differs between two `tree_digests` results, added and removed ones included, sorted."""
    return sorted(path for path in set(recorded) | set(current) if recorded.get(path) != current.get(path))
