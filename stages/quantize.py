"""DVC stage `quantize@<variant>`: the Q/DQ INT8 ONNX shared by onnxruntime-int8 and tensorrt-int8."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.quantize import quantize

if __name__ == "__main__":
    raise SystemExit(run_stage(quantize, "variant"))
