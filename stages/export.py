"""DVC stage `export@<variant>`: the ONNX export (or the supplied ONNX, checked)."""

from pipeline.run import steps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.export, "variant"))
