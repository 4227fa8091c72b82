"""DVC stage `simplify@<variant>`: the simplified ONNX, checked against the export."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.simplify import simplify

if __name__ == "__main__":
    raise SystemExit(run_stage(simplify, "variant"))
