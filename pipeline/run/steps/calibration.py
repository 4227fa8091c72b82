"""Step `calibration@<variant>`: the INT8 calibration inputs."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import RunConfig
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_npz
from pipeline.inputs.calibration import calibration_inputs
from pipeline.planning.plan import spec_of


def calibration(cfg: RunConfig, variant_name: str) -> Path:
    """INT8 calibration inputs: person crops, preprocessed exactly like inference inputs."""
    if variant_name not in cfg.plan["calibrations"]:
        raise ConfigError(f"variant {variant_name!r} has no INT8 target in the plan; nothing to calibrate")
    paths = cfg.plan["calibrations"][variant_name]
    inputs = calibration_inputs(cfg.calibration, spec_of(cfg, variant_name))
    write_npz(paths["calibration"], {"input": inputs})
    print(f"calibration {variant_name}: {len(inputs)} samples from {cfg.calibration.source}")
    return Path(paths["calibration"])
