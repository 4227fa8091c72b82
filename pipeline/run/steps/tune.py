"""Step `tune@<job>`: the target's runtime settings, measured."""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.core.io import write_json
from pipeline.measure.tune import tune as run_tune
from pipeline.planning.plan import spec_of
from pipeline.run.steps.common import _job_entry, _job_sources


def tune(cfg: RunConfig, job: str) -> dict:
    """Measure the target's runtime settings (pipeline/measure/tune.py) and write the record that verify, the
    benchmark, infer and release read (pipeline/backends/runtime.py: recorded_runtime)."""

    entry = _job_entry(cfg, job)
    source, calibration_set = _job_sources(cfg, entry)
    record = run_tune(source, entry["target"], cfg, spec_of(cfg, entry["variant"]).input_hw, calibration_set)
    record["job"] = job
    write_json(entry["tune"], record)
    for mode, settings in record["chosen"].items():
        print(f"tune {job} {mode}: {settings}")
    return record
