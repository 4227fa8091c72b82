"""DVC stage `verify@<variant>.<target>`: the artifact against the reference, with metrics; fails on a breach."""

from pipeline.run import steps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.verify, "job"))
