"""DVC stage `tune@<job>`: measure the target's runtime settings; `build` records the chosen ones."""

from pipeline import steps
from pipeline.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.tune, "job"))
