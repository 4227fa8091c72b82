"""DVC stage `stage-deps`: each stage's params, from params.yaml read once, and the hashes of the source files it
executes, derived from the code (pipeline/planning/stage_deps.py)."""

from pipeline.planning.stage_deps import write_stage_deps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(write_stage_deps, None))
