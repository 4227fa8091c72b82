"""DVC stage `quantize@<variant>`: the Q/DQ INT8 ONNX shared by onnxruntime-int8 and tensorrt-int8."""

from pipeline.run import steps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.quantize, "variant"))
