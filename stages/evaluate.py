"""DVC stage `evaluate@<variant>` (optional, `evaluate.enabled`): keypoint AP of every target vs PyTorch."""

from pipeline.cli import run_stage
from pipeline.evaluate import evaluate

if __name__ == "__main__":
    raise SystemExit(run_stage(evaluate, "variant"))
