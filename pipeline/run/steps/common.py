"""What the steps of this package share: a job's plan entry, an upstream output that must exist, a job's ONNX.

Private to the step modules beside it (the names are those of the single steps module they came from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import RunConfig
from pipeline.core.errors import ConfigError
from pipeline.core.io import read_npz


def _job_entry(cfg: RunConfig, job: str) -> dict:
    if job not in cfg.plan["jobs"]:
        raise ConfigError(f"job {job!r} is not in the plan; choose one of {', '.join(cfg.plan['jobs'])} "
                          "or change model/targets")
    return cfg.plan["jobs"][job]


def _require(path: str | Path, stage: str, name: str) -> Path:
    """An upstream output that must exist; says which stage makes it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run the `{stage}@{name}` stage first "
                          f"(dvc repro {stage}@{name}, or python -m pipeline for the whole chain)")
    return path


def _job_sources(cfg: RunConfig, entry: dict) -> tuple[Path, np.ndarray | None]:
    """The job's ONNX (simplified or Q/DQ) and, for targets that calibrate themselves, the calibration set."""
    upstream = "quantize" if entry["onnx"].endswith("quantized/model.onnx") else "simplify"
    source = _require(entry["onnx"], upstream, entry["variant"])
    calibration_set = (read_npz(_require(entry["calibration"], "calibration", entry["variant"]))["input"]
                       if entry["calibration"] else None)
    return source, calibration_set
