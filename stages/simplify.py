"""DVC stage `simplify@<variant>`: the simplified ONNX, checked against the export."""

from pipeline.run import steps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.simplify, "variant"))
