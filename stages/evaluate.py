"""DVC stage `evaluate@<variant>` (optional, `evaluate.enabled`): keypoint AP of every target vs PyTorch."""

from pipeline.check.evaluate import evaluate
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(evaluate, "variant"))
