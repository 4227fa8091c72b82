"""DVC stage `build@<variant>.<target>`: the deployable artifact for one target."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.build import build

if __name__ == "__main__":
    raise SystemExit(run_stage(build, "job"))
