"""Step `build@<job>`: one target's artifact, with its metadata and drop-in files."""

from __future__ import annotations

from pathlib import Path

from pipeline import backends
from pipeline.backends.interface import SelfCalibration
from pipeline.backends.runtime import ARTIFACT_META
from pipeline.config import RunConfig
from pipeline.core.digest import sha256_file
from pipeline.core.io import atomic_path, write_json
from pipeline.core.onnx_io import get_metadata, load_onnx
from pipeline.core.versions import tool_versions
from pipeline.package.dropin import write_dropin
from pipeline.planning.plan import spec_of
from pipeline.run.steps.common import _job_entry, _job_sources


def build(cfg: RunConfig, job: str) -> Path:
    """Build one target's artifact from its ONNX (simplified or Q/DQ), with its metadata. The runtime
    settings `tune` measures stay beside it (pipeline/backends/runtime.py says why); `release` records them."""
    entry = _job_entry(cfg, job)
    target = backends.get_target(entry["target"])
    module = backends.get(target.backend)
    source, calibration_set = _job_sources(cfg, entry)
    # A target that calibrates itself gets the set with the quantize and verify values it needs, nothing more.
    calibration = None if calibration_set is None else SelfCalibration(
        calibration_set, tuple(cfg.quantize.keep_float), cfg.quantize.openvino_max_drift_px, cfg.verify.min_peak_margin)
    runtime: dict = {}  # the backend's defaults until released with the tuned settings
    with atomic_path(entry["artifact"], is_dir=True) as tmp:
        module.build(source, target, backends.settings_of(cfg.backends, target.backend), tmp, calibration)
        write_json(tmp / ARTIFACT_META, {
            "job": job, "variant": entry["variant"], "target": target.name, "backend": target.backend,
            "precision": target.precision, "source_onnx_sha256": sha256_file(source),
            "onnx_metadata": get_metadata(load_onnx(source)),
            "tool_versions": tool_versions(*getattr(module, "TOOLS", (target.backend,)), "onnx"),
            "runtime": runtime,
        })
        write_dropin(tmp, target, spec_of(cfg, entry["variant"]), get_metadata(load_onnx(source)), runtime=runtime)
    return Path(entry["artifact"])
