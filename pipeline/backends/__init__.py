"""Backend name -> module, in one plain dict; a module is imported only when its backend is chosen.

Every backend module has the same shape (STYLE.md): a docstring, `PRECISIONS` (read from `BACKENDS`),
`build(onnx_path, target, cfg, out_dir) -> Path`, a `Runner(artifact_dir, target, cfg, runtime=None,
mode="latency")` that maps `{name: ndarray}` to `{name: ndarray}` with the artifact's recorded runtime
settings (pipeline/backends/runtime.py), `RUNTIME_KEYS` and `default_runtime(cfg, mode)`. `import pipeline`
therefore works without any runtime installed, and a missing one fails with the extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from pipeline.core.errors import ConfigError, RuntimeMissingError


@dataclass(frozen=True)
class Backend:
    module: str  # the module that builds and runs its artifacts
    precisions: tuple[str, ...]  # the precisions it builds: declared here only, the module reads them
    package: str  # the Python package that provides its runtime
    extra: str  # the pip extra that installs it


BACKENDS: dict[str, Backend] = {
    "onnxruntime": Backend("pipeline.backends.onnxruntime", ("fp32", "fp16", "int8"), "onnxruntime", "onnxruntime"),
    "openvino": Backend("pipeline.backends.openvino", ("fp32", "fp16", "bf16", "int8"), "openvino", "openvino"),
    "ncnn": Backend("pipeline.backends.ncnn", ("fp32", "fp16"), "ncnn", "ncnn"),
    "tensorrt": Backend("pipeline.backends.tensorrt", ("fp16", "int8"), "tensorrt", "tensorrt"),
}


@dataclass(frozen=True)
class Target:
    backend: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}"


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
    return importlib.import_module(BACKENDS[target.backend].module).unavailable_reason(target)


def get(backend: str) -> ModuleType:
    """Import the backend's module; a missing runtime package names the extra to install."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    module, package, extra = BACKENDS[backend].module, BACKENDS[backend].package, BACKENDS[backend].extra
    try:
        importlib.import_module(package)
    except ImportError:
        raise RuntimeMissingError(
            f"backend {backend!r} needs the Python package {package!r}, which is not installed; "
            f"run `pip install \".[{extra}]\"`") from None
    return importlib.import_module(module)
