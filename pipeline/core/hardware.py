"""Hardware fingerprints: what artifacts and measurements are bound to.

The GPU fingerprint is part of the composed config (`hardware:` in conf/config.yaml, via the
`rtmpose_hardware` resolver) and every build stage reads its backend's (pipeline/planning/stage_deps.py), so
it is in the stage's deps file: an engine cached on one GPU/driver/TensorRT combination is never
restored onto another, it is rebuilt. The CPU fingerprint keys no stage: params.yaml and every CPU artifact
are the same on any x86 CPU (conf/config.yaml), so DVC does not re-measure the `tune` stage on another CPU;
it is recorded instead, in every tune record and next to every benchmark figure (`machine`), to say where
they were measured.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

# /proc/cpuinfo flags that decide which kernels the runtimes pick on x86 (oneDNN, MLAS, ncnn).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_bf16", "amx_int8", "amx_fp16")

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


def _cpuinfo() -> tuple[str, set[str], int]:
    """(model name, flags, physical cores) from /proc/cpuinfo; ("", set(), 0) where there is none."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return "", set(), 0
    model, flags, cores = "", set(), set()
    physical_id = core_id = ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and not model:
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
            cores.add((physical_id, core_id))
    return model, flags, len(cores)


def cpu_fingerprint() -> dict[str, object]:
    """The CPU that timings and tuned runtime settings belong to.

    Keys: `cpu` (model name), `isa` (the ISA_FLAGS the CPU has, sorted), `logical_cores` (usable by
    this process), `physical_cores` (0 where unknown), `os` (kernel and libc, platform.platform()).
    """
    model, flags, physical = _cpuinfo()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    return {"cpu": model or platform.processor() or platform.machine(),
            "isa": sorted(f for f in ISA_FLAGS if f in flags),
            "logical_cores": usable, "physical_cores": physical, "os": platform.platform()}


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver with at least one GPU: `nvidia-smi -L` lists it."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout
