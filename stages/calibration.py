"""DVC stage `calibration@<variant>`: INT8 calibration crops from a COCO set or an image folder."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.calibration import calibration

if __name__ == "__main__":
    raise SystemExit(run_stage(calibration, "variant"))
