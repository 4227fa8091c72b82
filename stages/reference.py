"""DVC stage `reference@<variant>`: golden inputs and the reference outputs."""

from pipeline.run import steps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.reference, "variant"))
