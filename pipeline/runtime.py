"""Runtime settings that belong to an artifact: how its runtime is told to run it (issue 12).

An artifact's speed depends on more than its files: threads, streams, performance hints and whether
the input shape is fixed before compilation. The `tune` stage measures a small grid of these per
target (pipeline/tune.py) and `build` records the fastest in `artifact.json` under `runtime`, one
dict per mode:

- `latency`: one image at a time (batch 1), the figure the benchmark's headline uses;
- `throughput`: many images with every core busy (several streams or sessions in flight).

Every backend's Runner takes `runtime=None` and `mode="latency"`: given no settings it reads the
recorded ones, so `infer`, `verify`, `evaluate` and the benchmark run exactly what was tuned. An
artifact that records none (built before tuning, or a bare model file) runs with `default_runtime`,
the backend's settings from `backends.<backend>` in the config. The keys of each backend's dict are
listed in its module (`RUNTIME_KEYS`); an unknown key is a ConfigError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

MODES = ("latency", "throughput")
ARTIFACT_META = "artifact.json"


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"runtime mode {mode!r}; choose one of {', '.join(MODES)}")


def recorded_runtime(artifact_dir: str | Path, mode: str) -> dict[str, Any] | None:
    """The settings `build` recorded for `mode` in the artifact's artifact.json, or None."""
    check_mode(mode)
    path = Path(artifact_dir) / ARTIFACT_META
    if not path.is_file():
        return None
    runtime = json.loads(path.read_text(encoding="utf-8")).get("runtime") or {}
    return dict(runtime[mode]) if mode in runtime else None


def check_keys(runtime: Mapping[str, Any], allowed: Iterable[str], backend: str) -> None:
    unknown = sorted(set(runtime) - set(allowed))
    if unknown:
        raise ConfigError(f"{backend} runtime settings {unknown} are unknown; use {', '.join(sorted(allowed))}")
