"""Step `tune@<job>`: the target's runtime settings, measured."""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.core.io import write_json
from pipeline.measure.tune import tune as run_tune
from pipeline.planning.plan import spec_of
from pipeline.run.steps.common import _job_entry, _require


def tune(cfg: RunConfig, job: str) -> dict:
    """Measure the runtime settings of the artifact `build` made (pipeline/measure/tune.py) and write the record
    that verify, the benchmark, infer and release read (pipeline/backends/runtime.py: recorded_runtime)."""

    entry = _job_entry(cfg, job)
    artifact = _require(entry["artifact"], "build", job)
    record = run_tune(artifact, entry["target"], cfg.tune, cfg.backends, spec_of(cfg, entry["variant"]).input_hw)
    record["job"] = job
    write_json(entry["tune"], record)
    kept = f" ({record['kept_defaults']})" if record.get("kept_defaults") else ""  # absent where nothing is measured
    for mode, settings in record["chosen"].items():
        print(f"tune {job} {mode}: {settings}{kept}")
    return record
