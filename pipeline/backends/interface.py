"""The types in a backend module's shape (pipeline/backends/__init__.py): the files of its artifact, what a
backend that calibrates itself is given besides its settings, and the peers it makes for the benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class ArtifactFormat:
    """The files a backend's artifact consists of, by the names its Runner opens them (pipeline/infer.py
    stages a bare model file under these names; pipeline/package/dropin.py names them in deploy.json)."""

    model: str  # the file the Runner opens (the SDK's `net`); its suffix recognises a bare model file
    weights: str = ""  # the weights file, same stem as the model file (the SDK's `weights`); "": none
    companions: tuple[str, ...] = ()  # other files the Runner reads, found beside the model file by name
    precision_record: Optional[tuple[str, str]] = None  # (companion, key) recording the precision it was built for
    one_image: bool = False  # converted for one image at a time, whatever the ONNX's batch axis

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.model).suffix


@dataclass(frozen=True)
class SelfCalibration:
    """What `build` of a target that quantizes itself (openvino-int8: NNCF) is given besides its own settings."""

    inputs: np.ndarray  # [N,3,H,W] float32 calibration crops (the calibration stage's set)
    keep_float: tuple[str, ...]  # quantize.keep_float: node-name prefixes left in float
    max_drift_px: Optional[float]  # quantize.openvino_max_drift_px: NNCF accuracy control's budget (None: off)
    min_peak_margin: float  # verify.min_peak_margin: which keypoints that budget counts


@dataclass
class Peer:
    """What a user gets without this pipeline, as the backend's runtime documents it: files written by the
    backend's `peers` and the settings its Runner runs them with (a benchmark candidate, pipeline/measure/peers.py)."""

    name: str  # `peer-<what>`
    target: str  # whose Runner loads the files
    artifact_dir: Path
    latency_runtime: dict = field(default_factory=dict)
    throughput_runtime: dict = field(default_factory=dict)
    description: str = ""
