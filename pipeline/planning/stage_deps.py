"""What each DVC stage reads besides its data: its params and its code, written per stage as one small file.

A no-op `dvc status` or `dvc repro` checks every stage against dvc.lock, and its cost grows with what
each stage lists. Profiled on the released matrix (75 variants x onnxruntime-fp32, 453 stages;
benchmarks/dvc_noop.py):
- `params:` entries make DVC parse the whole params file once per stage and command, and params.yaml
  carries the plan, which grows with the matrix (111 KB): 90% of a no-op status went there;
- every listed file is a dvc.lock entry to parse, a dependency object to build and a state lookup to
  make, and 70% of the entries were the same source files, repeated in every variant's stages.

So the stages of the plan list neither. One stage, `stage-deps`, depends on params.yaml and the source
folders, reads params.yaml once and writes, per stage instance, the values of the params that stage
reads and the MD5 of each source file or folder it runs (`<out_dir>/stage-deps/<stage>/<key>.json`,
sorted keys). Each stage depends on its file and on its data inputs. A file whose content did not
change keeps its bytes and hash, so changing one target's settings, or one backend's module, reruns
only the stages that read it, and the run-cache (keyed on dependency hashes) still restores the rest.

`STAGE_DEPS` holds what the `params:` and source `deps:` of dvc.yaml used to list: a stage that reads a
key or runs a module not listed for it would not rerun when that changes. Params are dotted keys into
the validated config (`RunConfig`) and sources are paths relative to the repository; both may name
`{variant}`, `{job}`, `{backend}` or `{precision}`, filled from the plan entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.config import REPO_ROOT
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_path

DIRNAME = "stage-deps"


@dataclass(frozen=True)
class StageDeps:
    """What one dvc.yaml stage reads besides its data inputs."""

    section: str | None  # the plan section the stage's `foreach` iterates; None for a single stage
    params: tuple[str, ...]
    code: tuple[str, ...]  # source files and folders the stage runs


SPEC = ("plan.variants.{variant}.spec",)  # the model's description, composed into the plan
MODEL = ("plan.variants.{variant}.spec", "plan.variants.{variant}.model")  # ... and what its weights come from
STAGE_DEPS: dict[str, StageDeps] = {
    "reference": StageDeps(
        "variants", (*MODEL, "verify.num_figures", "verify.num_random", "verify.seed"),
        ("stages/reference.py", "pipeline/run/steps.py", "pipeline/check/reference.py", "pipeline/inputs/golden.py",
         "pipeline/model/preprocess.py", "pipeline/inputs/data", "pipeline/model", "pipeline/model/spec.py", "pipeline/planning/plan.py",
         "pipeline/sources/describe.py", "pipeline/sources/checkpoint.py", "pipeline/sources/weights.py", "pipeline/core/onnx_io.py",
         "pipeline/check/verify.py")),
    "export": StageDeps(
        "variants", (*MODEL, "export"),
        ("stages/export.py", "pipeline/run/steps.py", "pipeline/graph/export.py", "pipeline/check/reference.py", "pipeline/core/onnx_io.py",
         "pipeline/model", "pipeline/model/spec.py", "pipeline/planning/plan.py", "pipeline/sources/describe.py", "pipeline/sources/checkpoint.py",
         "pipeline/sources/weights.py")),
    "simplify": StageDeps(
        "variants", (*SPEC, "simplify"),
        ("stages/simplify.py", "pipeline/run/steps.py", "pipeline/graph/simplify.py", "pipeline/core/onnx_io.py", "pipeline/model/spec.py")),
    "calibration": StageDeps(
        "calibrations", (*SPEC, "calibration"),
        ("stages/calibration.py", "pipeline/run/steps.py", "pipeline/inputs/calibration.py", "pipeline/model/preprocess.py",
         "pipeline/model/spec.py")),
    "quantize": StageDeps(
        "quantizations", ("quantize",),
        ("stages/quantize.py", "pipeline/run/steps.py", "pipeline/graph/quantize.py")),
    "tune": StageDeps(
        "jobs", ("plan.variants.{variant}.spec", "tune", "quantize.keep_float", "quantize.openvino_max_drift_px",
                 "verify.min_peak_margin", "backends.{backend}"),
        ("stages/tune.py", "pipeline/run/steps.py", "pipeline/measure/tune.py", "pipeline/measure/benchmark.py", "pipeline/measure/timing.py",
         "pipeline/backends/runtime.py", "pipeline/core/hardware.py", "pipeline/backends/__init__.py",
         "pipeline/backends/{backend}.py", "pipeline/graph/fp16.py", "pipeline/core/onnx_io.py", "pipeline/model/decode.py",
         "pipeline/check/verify.py", "pipeline/model/spec.py")),
    "build": StageDeps(
        "jobs", ("plan.variants.{variant}.spec", "quantize.keep_float", "quantize.openvino_max_drift_px",
                 "verify.min_peak_margin", "backends.{backend}", "hardware.{backend}"),
        ("stages/build.py", "pipeline/run/steps.py", "pipeline/backends/__init__.py", "pipeline/backends/{backend}.py",
         "pipeline/graph/fp16.py", "pipeline/package/dropin.py", "pipeline/model/spec.py", "pipeline/backends/runtime.py", "pipeline/model/decode.py",
         "pipeline/check/verify.py")),
    "verify": StageDeps(
        "jobs", ("verify.tolerances.{precision}", "verify.min_peak_margin", "backends.{backend}"),
        ("stages/verify.py", "pipeline/run/steps.py", "pipeline/check/verify.py", "pipeline/model/decode.py", "pipeline/model/preprocess.py",
         "pipeline/model/spec.py", "pipeline/core/onnx_io.py", "pipeline/backends/common.py", "pipeline/backends/{backend}.py",
         "pipeline/backends/runtime.py")),
    "benchmark": StageDeps(
        "variants", ("benchmark", "verify.tolerances", "verify.min_peak_margin", *SPEC),
        ("stages/benchmark.py", "pipeline/run/steps.py", "pipeline/measure/benchmark.py", "pipeline/measure/timing.py", "pipeline/measure/peers.py",
         "pipeline/backends/runtime.py", "pipeline/core/hardware.py", "pipeline/backends", "pipeline/check/verify.py", "pipeline/model/decode.py",
         "pipeline/core/onnx_io.py", "pipeline/model/spec.py")),
    "evaluate": StageDeps(
        "evaluations", (*MODEL, "evaluate", "backends"),
        ("stages/evaluate.py", "pipeline/check/evaluate.py", "pipeline/check/reference.py", "pipeline/infer.py",
         "pipeline/model/preprocess.py", "pipeline/model/decode.py", "pipeline/backends", "pipeline/model", "pipeline/sources/weights.py",
         "pipeline/model/spec.py", "pipeline/planning/plan.py")),
    "report": StageDeps(
        None, ("targets", "plan.left_out"),
        ("stages/report.py", "pipeline/report", "pipeline/report/overlay.py", "pipeline/inputs/golden.py", "pipeline/model/preprocess.py",
         "pipeline/model/decode.py", "pipeline/model/keypoints.py", "pipeline/backends", "pipeline/inputs/data", "pipeline/model/spec.py",
         "pipeline/planning/plan.py")),
    "release": StageDeps(
        "variants", ("plan.left_out", *SPEC),
        ("stages/release.py", "pipeline/package/release.py", "pipeline/package/dropin.py", "pipeline/backends/runtime.py")),
}
VARIANT_STAGES = tuple(name for name, s in STAGE_DEPS.items() if s.section not in ("jobs", None))
JOB_STAGES = tuple(name for name, s in STAGE_DEPS.items() if s.section == "jobs")


def deps_dir(out_dir: str) -> str:
    """The folder `stage-deps` writes (its one DVC output)."""
    return str(PurePosixPath(out_dir) / DIRNAME)


def deps_path(out_dir: str, stage: str, key: str | None = None) -> str:
    """`<out_dir>/stage-deps/<stage>/<key>.json`, or `<out_dir>/stage-deps/<stage>.json` for a single stage."""
    root = PurePosixPath(deps_dir(out_dir))
    return str(root / stage / f"{key}.json" if key else root / f"{stage}.json")


def deps_paths(out_dir: str, key: str, stages: tuple[str, ...]) -> dict[str, str]:
    """The deps file of each of `stages` for one variant or job, keyed by stage (the plan's `deps`)."""
    return {stage: deps_path(out_dir, stage, key) for stage in stages}


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"stage deps: the config has no key {dotted!r} (pipeline/planning/stage_deps.py)")
        value = value[part]
    return value


def source_md5(relative: str, root: Path = REPO_ROOT) -> str:
    """MD5 of a source file's bytes; of a folder, over `<path> <md5>` lines of its files (bytecode left out)."""
    path = root / relative
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    if not path.is_dir():
        raise ConfigError(f"stage deps: {relative} does not exist (pipeline/planning/stage_deps.py lists it)")
    lines = [f"{p.relative_to(path).as_posix()} {hashlib.md5(p.read_bytes()).hexdigest()}\n"
             for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return hashlib.md5("".join(lines).encode()).hexdigest()


def stage_deps(cfg: Any, root: Path = REPO_ROOT) -> dict[str, dict[str, Any]]:
    """Deps file path -> {"params": values, "code": {path: md5}}, for every stage instance of the plan.

    `cfg` is a validated `RunConfig`; params values are its plain-data form (what the stages see,
    defaults included), keyed by the dotted key as dvc.lock would have recorded them. Raises
    ConfigError if a listed key or source path does not exist.
    """
    data = dataclasses.asdict(cfg)
    md5s: dict[str, str] = {}
    files: dict[str, dict[str, Any]] = {}
    for stage, spec in STAGE_DEPS.items():
        items = cfg.plan[spec.section] if spec.section else {None: {}}
        for key, entry in items.items():
            fields = {"variant": key, "job": key, **{k: v for k, v in entry.items() if isinstance(v, str)}}
            path = entry["deps"][stage] if key else cfg.plan["stage_deps"][stage]
            code = [p.format(**fields) for p in spec.code]
            for source in code:
                if source not in md5s:
                    md5s[source] = source_md5(source, root)
            files[path] = {"params": {name: _lookup(data, name) for name in (k.format(**fields) for k in spec.params)},
                           "code": {source: md5s[source] for source in code}}
    return files


def write_stage_deps(cfg: Any) -> Path:
    """Write every stage's deps file under `<out_dir>/stage-deps` (the folder replaced whole, atomically)."""
    root = Path(cfg.plan["stage_deps"]["dir"])
    files = stage_deps(cfg)
    with atomic_path(root, is_dir=True) as tmp:
        for path, content in files.items():
            target = tmp / Path(path).relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"stage deps: {len(files)} files in {root}")
    return root
