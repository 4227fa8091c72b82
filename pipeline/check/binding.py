"""What a verdict was given to: the sha256 of every byte verify judged, and whether they are still those bytes.

`verify` records, in the job's metrics (`verified_bytes`), the digest of each file of the artifact
folder, of the golden reference (`reference.npz`) and of the tune record whose runtime settings it ran
with. `release` recomputes them and withholds an artifact whose bytes differ (changed by hand, by a tool
or by a stale cache after verify): a verdict is valid for the bytes it judged, never for a folder name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.digest import changed_files, sha256_file, tree_digests

RECORD_KEY = "verified_bytes"


def bytes_judged(artifact: str | Path, reference: str | Path, tune: str | Path) -> dict[str, Any]:
    """{'artifact': {file: sha256}, 'reference': sha256, 'tune': sha256 or None (no tune record)}.

    `artifact` is the artifact folder, `reference` the variant's reference.npz, `tune` the job's tune record
    (pipeline/backends/runtime.py: tune_record), which may be absent."""
    tune = Path(tune)
    return {"artifact": tree_digests(artifact), "reference": sha256_file(reference),
            "tune": sha256_file(tune) if tune.is_file() else None}


def changed_since_verified(record: dict[str, Any] | None, artifact: str | Path, reference: str | Path,
                           tune: str | Path) -> str:
    """'' when the artifact, reference and tune record are the bytes `record` (a `bytes_judged` result from the
    metrics) describes, else one line naming what differs. A missing record counts as a difference."""
    if not record:
        return "its metrics record no digest of the bytes verify judged (an older version wrote them)"
    now = bytes_judged(artifact, reference, tune)
    changed = [f"artifact file {path}" for path in changed_files(record.get("artifact", {}), now["artifact"])]
    changed += [f"the {what} record" if what == "tune" else f"the {what}"
                for what in ("reference", "tune") if record.get(what) != now[what]]
    if not changed:
        return ""
    shown = ", ".join(changed[:3]) + (f" (+{len(changed) - 3} more)" if len(changed) > 3 else "")
    return f"changed since verify judged it: {shown} differ from the verified sha256"
