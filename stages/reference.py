"""DVC stage `reference@<variant>`: golden inputs and the reference outputs."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.reference import reference

if __name__ == "__main__":
    raise SystemExit(run_stage(reference, "variant"))
