"""DVC stage `export@<variant>`: the ONNX export (or the supplied ONNX, checked)."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.export import export

if __name__ == "__main__":
    raise SystemExit(run_stage(export, "variant"))
