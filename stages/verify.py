"""DVC stage `verify@<variant>.<target>`: the artifact against the reference, with metrics; fails on a breach."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.verify import verify

if __name__ == "__main__":
    raise SystemExit(run_stage(verify, "job"))
