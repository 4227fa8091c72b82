"""DVC stage `tune@<job>`: measure the target's runtime settings; Runners read the record, `release` ships it."""

from pipeline.run import steps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.tune, "job"))
