"""DVC stage `build@<variant>.<target>`: the deployable artifact for one target."""

from pipeline.run import steps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.build, "job"))
