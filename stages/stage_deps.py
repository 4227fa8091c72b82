"""DVC stage `stage-deps`: each stage's params and source hashes, from params.yaml read once (pipeline/stage_deps.py)."""

from pipeline.cli import run_stage
from pipeline.stage_deps import write_stage_deps

if __name__ == "__main__":
    raise SystemExit(run_stage(write_stage_deps, None))
