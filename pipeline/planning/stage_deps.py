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

Params are listed here by hand, per stage: dotted keys into the validated config (`RunConfig`), which
may name `{variant}`, `{job}`, `{backend}` or `{precision}`, filled from the plan entry; a stage that reads a
key not listed for it would not rerun when that changes. Sources are not listed: they are the files the
stage executes, derived from the code (pipeline/planning/closure.py): the import closure of
`stages/<stage>.py`, plus, for the stages in `BY_NAME`, the modules of the backends they load by name (a
job's stage its own backend's; a variant's or the whole plan's stage those its jobs use). Editing a file
therefore reruns the stages that execute it, and only those (tests/run/test_dvc.py records what each stage
process loads and checks it against these files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.backends import BACKENDS
from pipeline.config import REPO_ROOT
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_path
from pipeline.planning.closure import source_files
from pipeline.planning.deps_files import SECTIONS

SPEC = ("plan.variants.{variant}.spec",)  # the model's description, composed into the plan
MODEL = ("plan.variants.{variant}.spec", "plan.variants.{variant}.model")  # ... and what its weights come from
# Stage -> the params it reads (what the `params:` of dvc.yaml used to list).
PARAMS: dict[str, tuple[str, ...]] = {
    "reference": (*MODEL, "verify.num_figures", "verify.num_random", "verify.seed"),
    "export": (*MODEL, "export"),
    "simplify": (*SPEC, "simplify"),
    "calibration": (*SPEC, "calibration"),
    "quantize": ("quantize",),
    "tune": ("plan.variants.{variant}.spec", "tune", "backends.{backend}"),  # times build's artifact
    "build": ("plan.variants.{variant}.spec", "quantize.keep_float", "quantize.openvino_max_drift_px",
              "verify.min_peak_margin", "backends.{backend}", "hardware.{backend}"),
    "verify": ("verify.tolerances.{precision}", "verify.min_peak_margin", "backends.{backend}"),
    "benchmark": ("benchmark", "verify.tolerances", "verify.min_peak_margin", *SPEC),
    "evaluate": (*MODEL, "evaluate", "backends"),
    "report": ("targets", "plan.left_out"),
    "release": ("plan.left_out", *SPEC),
    "demo-data": (),  # its params are conf/train_demo.yaml's, listed in dvc.yaml
}
# Stages that load backend modules by name (pipeline/backends/__init__.py `get`), which imports cannot show.
BY_NAME = ("tune", "build", "verify", "benchmark", "evaluate", "report", "release")


def stage_backends(cfg: Any, stage: str, entry: dict[str, Any]) -> tuple[str, ...]:
    """The backends whose modules the stage instance loads by name: a job's own; the backends of a variant's
    jobs; of every planned job for a stage over the whole plan; none for a stage not in `BY_NAME`."""
    if stage not in BY_NAME:
        return ()
    if SECTIONS[stage] == "jobs":
        return (entry["backend"],)
    jobs = entry["jobs"] if SECTIONS[stage] else cfg.plan["jobs"]
    return tuple(sorted({cfg.plan["jobs"][job]["backend"] for job in jobs}))


@cache
def stage_sources(stage: str, backends: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The source files (and data folders) a stage's process executes with these backends, repository-relative."""
    return source_files([f"stages.{stage.replace('-', '_')}", *(BACKENDS[name].module for name in backends)])


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
        raise ConfigError(f"stage deps: {relative} does not exist in this checkout (a stage's source, "
                          "pipeline/planning/closure.py); restore it or correct DATA there")
    lines = [f"{p.relative_to(path).as_posix()} {hashlib.md5(p.read_bytes()).hexdigest()}\n"
             for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return hashlib.md5("".join(lines).encode()).hexdigest()


def stage_deps(cfg: Any) -> dict[str, dict[str, Any]]:
    """Deps file path -> {"params": values, "code": {path: md5}}, for every stage instance of the plan.

    `cfg` is a validated `RunConfig`; params values are its plain-data form (what the stages see,
    defaults included), keyed by the dotted key as dvc.lock would have recorded them; code is every
    source file and data folder the stage executes (`stage_sources`), hashed in this checkout. Raises
    ConfigError if a listed key or a source path does not exist.
    """
    data = dataclasses.asdict(cfg)
    md5s: dict[str, str] = {}
    files: dict[str, dict[str, Any]] = {}
    for stage, params in PARAMS.items():
        section = SECTIONS[stage]
        items = cfg.plan[section] if section else {None: {}}
        for key, entry in items.items():
            fields = {"variant": key, "job": key, **{k: v for k, v in entry.items() if isinstance(v, str)}}
            path = entry["deps"][stage] if key else cfg.plan["stage_deps"][stage]
            code = stage_sources(stage, stage_backends(cfg, stage, entry))
            for source in code:
                if source not in md5s:
                    md5s[source] = source_md5(source)
            files[path] = {"params": {name: _lookup(data, name) for name in (k.format(**fields) for k in params)},
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
