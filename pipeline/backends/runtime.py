"""Runtime settings that belong to an artifact: how its runtime is told to run it (issue 12).

An artifact's speed depends on more than its files: threads, streams, performance hints and whether
the input shape is fixed before compilation. The `tune` stage measures a small grid of these per
target (pipeline/measure/tune.py) and writes the fastest to `<variant dir>/tune/<target>.json`, one dict per
mode; `release` records them in the shipped artifact.json (under `runtime`) and detail.json:

- `latency`: one image at a time (batch 1), the figure the benchmark's headline uses;
- `throughput`: many images with every core busy (several streams or sessions in flight).

Every backend's Runner takes `runtime=None` and `mode="latency"`: given no settings it reads the
recorded ones, so `infer`, `verify`, `evaluate` and the benchmark run exactly what was tuned. An
artifact that records none (not tuned, or a bare model file) runs with `default_runtime`, the
backend's settings from `backends.<backend>` in the config.

Why the tuned settings stay out of `build`'s output: they are measured, so they differ between
machines, while the built artifact is the same bytes on every x86 CPU (README, "Same artifacts on
every CPU"); the tune record is a CPU-dependent output like the benchmark, and it names the machine. The keys of each backend's dict are
listed in its module (`RUNTIME_KEYS`); an unknown key is a ConfigError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError

MODES = ("latency", "throughput")
ARTIFACT_META = "artifact.json"
TUNE_DIR = "tune"


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"runtime mode {mode!r}; choose one of {', '.join(MODES)}")


def tune_record(artifact_dir: str | Path) -> Path:
    """Where the `tune` stage writes its record for the artifact `<variant dir>/<target>`:
    `<variant dir>/tune/<target>.json` (pipeline/planning/plan.py plans the same path)."""
    artifact_dir = Path(artifact_dir)
    return artifact_dir.parent / TUNE_DIR / f"{artifact_dir.name}.json"


def recorded_runtime(artifact_dir: str | Path, mode: str) -> dict[str, Any] | None:
    """The settings for `mode` recorded in the artifact's artifact.json (a released artifact carries the
    tuned ones), else those the `tune` stage chose for it (`tune_record`), else None."""
    check_mode(mode)
    for path, key in ((Path(artifact_dir) / ARTIFACT_META, "runtime"), (tune_record(artifact_dir), "chosen")):
        if path.is_file():
            settings = json.loads(path.read_text(encoding="utf-8")).get(key) or {}
            if mode in settings:
                return dict(settings[mode])
    return None


def tuned_runtime(artifact_dir: str | Path) -> dict[str, dict[str, Any]]:
    """{mode: settings} for every mode with recorded settings (see `recorded_runtime`)."""
    found = {mode: recorded_runtime(artifact_dir, mode) for mode in MODES}
    return {mode: settings for mode, settings in found.items() if settings is not None}


def check_keys(runtime: Mapping[str, Any], allowed: Iterable[str], backend: str) -> None:
    unknown = sorted(set(runtime) - set(allowed))
    if unknown:
        raise ConfigError(f"{backend} runtime settings {unknown} are unknown; use {', '.join(sorted(allowed))}")


def resolve_runtime(artifact_dir: str | Path, mode: str, runtime: Mapping[str, Any] | None, default: Mapping[str, Any],
                    allowed: Iterable[str], backend: str) -> Mapping[str, Any]:
    """The settings a Runner runs with: `runtime` if given, else the recorded ones (`recorded_runtime`),
    else `default` (the backend's `default_runtime`). Raises ConfigError for an unknown mode or key."""
    check_mode(mode)
    if runtime is None:
        runtime = recorded_runtime(artifact_dir, mode) or default
    check_keys(runtime, allowed, backend)
    return runtime
