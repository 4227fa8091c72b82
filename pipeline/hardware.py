"""Hardware fingerprints that key artifacts which only run where they were built (TensorRT engines).

The fingerprint is part of the composed config (`hardware:` in conf/config.yaml, via the
`rtmpose_hardware` resolver) and every build stage reads its backend's (pipeline/stage_deps.py), so
it is in the stage's deps file: an engine cached on one GPU/driver/TensorRT combination is never
restored onto another, it is rebuilt.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import metadata

NO_GPU = {"gpu": "none", "compute_capability": "", "driver": "", "tensorrt": ""}


def parse_nvidia_smi(csv_text: str) -> dict[str, str]:
    """First GPU of `nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader`."""
    lines = [line for line in csv_text.strip().splitlines() if line.strip()]
    if not lines:
        return dict(NO_GPU)
    name, capability, driver = (part.strip() for part in lines[0].split(","))
    return {"gpu": name, "compute_capability": capability, "driver": driver, "tensorrt": ""}


def tensorrt_version() -> str:
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-bindings"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def gpu_fingerprint() -> dict[str, str]:
    if shutil.which("nvidia-smi") is None:
        return dict(NO_GPU)
    try:
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return dict(NO_GPU)
    if query.returncode != 0:
        return dict(NO_GPU)
    fingerprint = parse_nvidia_smi(query.stdout)
    if fingerprint["gpu"] != "none":
        fingerprint["tensorrt"] = tensorrt_version()
    return fingerprint
