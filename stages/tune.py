"""DVC stage `tune@<job>`: measure the target's runtime settings; Runners read the record, `release` ships it."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.tune import tune

if __name__ == "__main__":
    raise SystemExit(run_stage(tune, "job"))
