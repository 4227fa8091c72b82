"""Backend name -> module, in one plain dict; a module is imported only when its backend is asked about.

Every backend module has the same shape (STYLE.md, `MODULE_SHAPE`), and owns every fact about its backend:
nothing outside `pipeline/backends/` branches on a backend's name; it asks the functions below.

- `PRECISIONS`: the precisions it builds (read from `BACKENDS`);
- `SETTINGS`: its config section's schema, `backends.<name>` (pipeline/config.py); `build`, `Runner` and
  `default_runtime` receive that section only (`settings_of`), never the whole RunConfig;
- `FILES`: the files its artifact consists of (`ArtifactFormat`, pipeline/backends/interface.py);
- `INT8_FROM_QDQ`: whether its int8 builds from the shared Q/DQ graph of the `quantize` stage (else it
  calibrates itself, from a `SelfCalibration`); read from its `BACKENDS` entry, like `PRECISIONS`;
- `BOUND_TO_GPU`: whether its artifacts are bound to the GPU they were built on (`hardware_binding`);
- `build(onnx_path, target, settings, out_dir, calibration=None) -> Path`;
- `Runner(artifact_dir, target, settings, runtime=None, mode="latency")`, mapping `{name: ndarray}` to
  `{name: ndarray}` with the artifact's recorded runtime settings (pipeline/backends/runtime.py);
  `RUNTIME_KEYS`, `default_runtime(settings, mode)` and `runtime_grid(mode, threads, static_batches)`, the
  settings the `tune` stage tries (pipeline/measure/tune.py);
- `peers(export_onnx, calibration, out_dir, static_shape) -> list[Peer]`: what a user gets from the plain
  export with the runtime's defaults, the benchmark's baseline (pipeline/measure/peers.py);
- `recorded_metadata(model_file)` and `sdk_tensor_names(artifact_dir)`: what a bare model file records about
  the model (pipeline/infer.py), and the network's tensor names as MMDeploy's SDK sees them (drop-in files);
- `unavailable_reason(target)`: '' or why this host cannot run the target (missing hardware).

`import pipeline` therefore works without any runtime installed, and a missing one fails with the extra to
install (`get`); facts that need no runtime are read without it (`module`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.backends.interface import ArtifactFormat
from pipeline.core.errors import ConfigError, InputError, PipelineError, RuntimeMissingError, one_line
from pipeline.core.hardware import gpu_fingerprint


@dataclass(frozen=True)
class Backend:
    module: str  # the module that builds and runs its artifacts
    precisions: tuple[str, ...]  # the precisions it builds: declared here only, the module reads them
    package: str  # the Python package that provides its runtime
    extra: str  # the pip extra that installs it
    # Whether its int8 builds from the shared Q/DQ graph (else it calibrates itself): declared here, like the
    # precisions, because the plan reads it in every stage process, which must not import every backend.
    int8_from_qdq: bool = False


BACKENDS: dict[str, Backend] = {
    "onnxruntime": Backend("pipeline.backends.onnxruntime", ("fp32", "fp16", "int8"), "onnxruntime", "onnxruntime",
                           int8_from_qdq=True),
    "openvino": Backend("pipeline.backends.openvino", ("fp32", "fp16", "bf16", "int8"), "openvino", "openvino"),
    "ncnn": Backend("pipeline.backends.ncnn", ("fp32", "fp16", "int8"), "ncnn", "ncnn"),
    "tensorrt": Backend("pipeline.backends.tensorrt", ("fp16", "int8"), "tensorrt", "tensorrt", int8_from_qdq=True),
}


@dataclass(frozen=True)
class Target:
    backend: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}"


MODULE_SHAPE = ("PRECISIONS", "SETTINGS", "FILES", "INT8_FROM_QDQ", "BOUND_TO_GPU", "RUNTIME_KEYS", "build", "Runner",
                "default_runtime", "runtime_grid", "peers", "recorded_metadata", "sdk_tensor_names",
                "unavailable_reason")


TARGETS: dict[str, Target] = {
    f"{backend}-{precision}": Target(backend, precision)
    for backend, spec in BACKENDS.items()
    for precision in spec.precisions
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"targets: unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[name]


def availability(target: Target) -> str:
    """'' if the target can run on this host, else why its job is left out of the plan (the backend
    module's `unavailable_reason`: TensorRT without a GPU, openvino-bf16 on a CPU without bf16).

    Only missing hardware leaves a job out; a missing Python package fails the build with the extra
    to install, so a misconfigured machine is never mistaken for one without the hardware.
    """
    return module(target.backend).unavailable_reason(target)


def module(backend: str) -> ModuleType:
    """The backend's module, for its facts: its runtime package is imported only by what runs it."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[backend].module)


def get(backend: str) -> ModuleType:
    """Import the backend's module to build or run; a missing runtime package names the extra to install."""
    found = module(backend)
    package, extra = BACKENDS[backend].package, BACKENDS[backend].extra
    try:
        importlib.import_module(package)
    except ImportError:
        raise RuntimeMissingError(
            f"backend {backend!r} needs the Python package {package!r}, which is not installed; "
            f"run `pip install \".[{extra}]\"`") from None
    return found


def settings_of(backends_cfg: Any, backend: str) -> Any:
    """The backend's own config section, `backends.<backend>` (its module's `SETTINGS`), from the `backends` config."""
    module(backend)  # an unknown name fails here, naming the backends
    return getattr(backends_cfg, backend)


def open_runner(artifact_dir: str | Path, target: Target, backends_cfg: Any, runtime: Mapping | None = None,
                mode: str = "latency") -> Any:
    """The target's Runner on `artifact_dir`, given its backend's section of `backends_cfg` only.

    Raises InputError when the runtime cannot open the artifact (a damaged or foreign file): the runtime's own
    error on one line (pipeline.core.errors.one_line) with the folder named; the project's own errors as they are."""
    module_ = get(target.backend)
    try:
        return module_.Runner(Path(artifact_dir), target, settings_of(backends_cfg, target.backend), runtime, mode)
    except PipelineError:
        raise
    except Exception as exc:  # onnxruntime, OpenVINO, ncnn or onnx refusing the files
        raise InputError(f"{target.backend} cannot open the artifact {artifact_dir} ({one_line(exc)}); "
                         "rebuild it (dvc repro build@<job>, or python -m pipeline)") from None


def files(backend: str) -> ArtifactFormat:
    """The files the backend's artifacts consist of."""
    return module(backend).FILES


def backend_of_model_file(suffix: str) -> str | None:
    """The backend whose artifact's model file has this suffix (`.onnx`, `.xml`, `.param`, `.engine`), or None."""
    return next((name for name in BACKENDS if files(name).suffix == suffix), None)


def int8_from_qdq(backend: str) -> bool:
    """Whether the backend's int8 target builds from the shared Q/DQ ONNX (else it calibrates itself)."""
    return BACKENDS[backend].int8_from_qdq


def runtime_grid(backend: str, mode: str, threads: list[int], static_batches: list[int]) -> list[dict[str, Any]]:
    """The runtime settings the `tune` stage times for the backend in `mode`, plainest first ([]: nothing to tune);
    `threads` are the thread counts to try, `static_batches` the input batches to fix (0: left dynamic)."""
    return module(backend).runtime_grid(mode, threads, static_batches)


def default_runtime(backend: str, backends_cfg: Any, mode: str = "latency") -> dict[str, Any]:
    """The settings an artifact of the backend runs with when none are recorded: its module's `default_runtime`
    on its section of `backends_cfg`. Raises ConfigError for an unknown backend or mode."""
    return module(backend).default_runtime(settings_of(backends_cfg, backend), mode)


def hardware_binding(backend: str) -> dict[str, Any]:
    """What the backend's artifacts are bound to: the GPU, driver and TensorRT version for engines, else
    nothing (`{"portable": True}`: the same artifact on every x86 CPU)."""
    return gpu_fingerprint() if module(backend).BOUND_TO_GPU else {"portable": True}
