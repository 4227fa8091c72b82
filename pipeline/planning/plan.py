"""The plan: which variants and jobs (`<variant>.<target>`) to build, and where every file goes.

The plan is part of the composed config (`plan: ${rtmpose_plan:...}` in conf/config.yaml), so
`params.yaml` carries it and `dvc.yaml` iterates over `plan.variants` and `plan.jobs` with
`foreach`, reading every path from it: paths are declared here, once (each variant's and job's
`deps` names the file holding its stages' params and source hashes, pipeline/planning/stage_deps.py). DVC
composes the Hydra config itself on `dvc exp run`; it imports `hydra_plugins/rtmpose_pipeline` first,
which calls `register_resolvers()` so that the same resolver runs there.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from omegaconf import OmegaConf

from pipeline.backends import BACKENDS, availability, get_target, hardware_binding, int8_from_qdq
from pipeline.backends.runtime import TUNE_DIR
from pipeline.config import ModelConfig, register_schema, to_schema
from pipeline.core.errors import ConfigError
from pipeline.model.keypoints import COCO17
from pipeline.model.presets import all_presets
from pipeline.model.spec import ModelSpec
from pipeline.planning.deps_files import JOB_STAGES, SINGLE_STAGES, VARIANT_STAGES, deps_dir, deps_path, deps_paths
from pipeline.sources.describe import describe
from pipeline.sources.weights import is_onnx_source

# The weights dependency of a variant without a checkpoint: the code that makes synthetic weights.
SYNTHETIC_WEIGHTS_SOURCE = "pipeline/model/synthetic.py"


def variant_paths(out_dir: str, variant: str) -> dict[str, str]:
    root = PurePosixPath(out_dir) / variant
    return {
        "reference": str(root / "reference.npz"),
        "export": str(root / "export" / "model.onnx"),
        "simplified": str(root / "simplified"),
        "simplified_onnx": str(root / "simplified" / "model.onnx"),
        "calibration": str(root / "calibration.npz"),
        "quantized": str(root / "quantized"),
        "quantized_onnx": str(root / "quantized" / "model.onnx"),
        "variant_dir": str(root),
        "benchmark": str(PurePosixPath(out_dir) / "benchmarks" / f"{variant}.json"),
        "evaluate": str(PurePosixPath(out_dir) / "evaluate" / f"{variant}.json"),
        "release": str(PurePosixPath(out_dir) / "release" / variant),
    }


def job_paths(out_dir: str, variant: str, target: str) -> dict[str, str]:
    root = PurePosixPath(out_dir) / variant
    return {"artifact": str(root / target), "metrics": str(root / "metrics" / f"{target}.json"),
            "tune": str(root / TUNE_DIR / f"{target}.json")}  # pipeline/backends/runtime.py: tune_record


def calibration_source(calibration: Any) -> str:
    """The file or folder the calibration set is read from (a DVC dependency)."""
    if calibration is None:
        return "pipeline/inputs/calibration.py"
    source = calibration.get("source", "coco")
    if source == "coco":
        return calibration.get("coco_dir") or "pipeline/inputs/calibration.py"
    if source == "images":
        return calibration.get("images_dir") or "pipeline/inputs/calibration.py"
    return "pipeline/inputs/calibration.py"  # blank: made by code alone


# Presets whose default weights are the project's trained demo checkpoint (dvc.yaml `train-demo`,
# committed, so a fresh `dvc repro` need not retrain it). Other presets use seeded synthetic weights
# unless `model.checkpoint` points at real ones. The embedded default (`model: demo`) is the same file,
# described by itself.
DEMO_CHECKPOINTS: dict[str, str] = {"rtmpose-t_coco17_256x192": "checkpoints/rtmpose-t_coco17_256x192_demo.pth"}
DEMO_MODEL = "demo"  # the `model` group option of the embedded default


def variant_entry(cfg: Any, variant: str) -> dict:
    """The plan's entry of a variant; an unplanned name fails with the planned ones."""
    if variant not in cfg.plan["variants"]:
        raise ConfigError(f"variant {variant!r} is not in the plan; pick one of {', '.join(cfg.plan['variants'])} "
                          "or change model (model=<preset>, model.checkpoint=<file>)")
    return cfg.plan["variants"][variant]


def spec_of(cfg: Any, variant: str):
    """The description of a planned variant, as composed into the plan (`plan.variants.<name>.spec`)."""

    return ModelSpec.from_dict(variant_entry(cfg, variant)["spec"])


def model_config(cfg: Any, variant: str):
    """The model config a planned variant was described from (`model`, or an extra preset's)."""

    return to_schema(ModelConfig, variant_entry(cfg, variant)["model"], f"plan.variants.{variant}.model")


def _model_cfg(model: Any):

    return model if isinstance(model, ModelConfig) else to_schema(ModelConfig, model or {}, "model")


def make_plan(model: Any, targets: list[str], out_dir: str, calibration: Any = None,
              extra_variants: list[str] | None = None, evaluate: Any = None,
              left_out: dict[str, str] | None = None) -> dict[str, Any]:
    """Variants (keyed by model name, each with its description) and jobs keyed by the names users type.

    `model` is the `model` config (ModelConfig or its dict); the file or preset it names is described
    (pipeline/sources/describe.py) and the description stored in the plan as `spec`, which every stage reads.
    `extra_variants` (e.g. the full released matrix) are presets, with their demo checkpoint if any.
    `calibrations` and `quantizations` hold the variants that need a calibration set or a Q/DQ
    ONNX; `left_out` names jobs that cannot run on this host and why (TensorRT without a GPU): each target's
    backend module is asked, unless `left_out` gives a composed plan's answer, taken as it is.
    Raises ConfigError/InputError (one line) for an unusable model or target.
    """

    plan: dict[str, Any] = {"variants": {}, "calibrations": {}, "quantizations": {}, "jobs": {}, "left_out": {}}
    model_cfg = _model_cfg(model)
    models = [model_cfg] + [ModelConfig(preset=name, checkpoint=DEMO_CHECKPOINTS.get(name),
                                        synthetic_seed=model_cfg.synthetic_seed) for name in extra_variants or []]
    for cfg in models:
        spec = describe(cfg)
        if spec.name in plan["variants"]:
            continue
        part = _variant_plan(spec, cfg, targets, out_dir, calibration, left_out)
        for key in plan:
            plan[key].update(part[key])
    plan["evaluations"] = _evaluations(plan["variants"], evaluate)
    # Each stage's params and source hashes (pipeline/planning/stage_deps.py), written by the `stage-deps` stage.
    plan["stage_deps"] = {"dir": deps_dir(out_dir), **{stage: deps_path(out_dir, stage) for stage in SINGLE_STAGES}}
    return plan


def _evaluations(variants: dict[str, Any], evaluate: Any) -> dict[str, Any]:
    """The variants the optional `evaluate` stage scores: every COCO-17 one, when evaluate.enabled."""

    if evaluate is None or not evaluate["enabled"]:
        return {}
    return {name: {**entry, "dataset_dir": evaluate["dataset_dir"]} for name, entry in variants.items()
            if tuple(entry["spec"]["keypoints"]["names"]) == COCO17}


def _variant_plan(spec, model_cfg, targets: list[str], out_dir: str, calibration: Any,
                  recorded: dict[str, str] | None) -> dict[str, Any]:

    variant = spec.name
    checkpoint = model_cfg.checkpoint
    from_onnx = is_onnx_source(model_cfg)
    paths = {**variant_paths(out_dir, variant), "deps": deps_paths(out_dir, variant, VARIANT_STAGES)}
    jobs: dict[str, Any] = {}
    left_out: dict[str, str] = {}
    for name in targets:
        target = get_target(name)
        job = f"{variant}.{name}"
        reason = availability(target) if recorded is None else recorded.get(job, "")
        if reason:
            left_out[job] = reason
            continue
        # int8 from the shared Q/DQ ONNX, or calibrated by the backend itself (its module says which)
        qdq = target.precision == "int8" and int8_from_qdq(target.backend)
        calibrated = target.precision == "int8" and not qdq
        onnx = paths["quantized_onnx"] if qdq else paths["simplified_onnx"]
        jobs[job] = {
            "variant": variant, "target": name, "backend": target.backend, "precision": target.precision,
            "onnx": onnx, "calibration": paths["calibration"] if calibrated else "",
            # dvc.yaml can neither interpolate a list of deps nor skip an empty one, and tolerates a
            # repeated dep: jobs that calibrate depend on the set, the others repeat their ONNX.
            "calibration_dep": paths["calibration"] if calibrated else onnx,
            "reference": paths["reference"], **job_paths(out_dir, variant, name),
            "deps": deps_paths(out_dir, job, JOB_STAGES),
        }
    needs_qdq = any(j["onnx"] == paths["quantized_onnx"] for j in jobs.values())
    needs_calibration = needs_qdq or any(j["calibration"] for j in jobs.values())
    return {
        "variants": {variant: {"checkpoint": checkpoint, "weights": checkpoint or SYNTHETIC_WEIGHTS_SOURCE,
                               "from_onnx": from_onnx, "jobs": sorted(jobs), "spec": spec.to_dict(),
                               "model": _model_entry(model_cfg), **paths}},
        "calibrations": {variant: {**paths, "source": calibration_source(calibration)}} if needs_calibration else {},
        "quantizations": {variant: paths} if needs_qdq else {},
        "jobs": jobs,
        "left_out": left_out,
    }


def _model_entry(model_cfg) -> dict[str, Any]:
    """The model config a variant was described from, as plain data (stages rebuild weights from it)."""
    import dataclasses

    return dataclasses.asdict(model_cfg)


def _plan_resolver(model: Any, targets: Any, out_dir: str, calibration: Any = None,
                   extra_variants: Any = None, evaluate: Any = None) -> Any:
    def plain(value: Any) -> Any:
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    plan = make_plan(plain(model), list(plain(targets) or []), out_dir, plain(calibration),
                     list(plain(extra_variants) or []), plain(evaluate))
    # A container, not a dict: OmegaConf.resolve (which DVC calls) only splices containers in place.
    return OmegaConf.create(plan)


def _presets_resolver() -> Any:

    return OmegaConf.create(all_presets())


def _hardware_resolver() -> Any:
    """Per backend, what its artifacts are bound to: TensorRT engines to one GPU/driver/TensorRT. (Not the
    CPU: params.yaml and every CPU artifact are the same on any x86 CPU; the tune record names its machine.)"""

    return OmegaConf.create({name: hardware_binding(name) for name in BACKENDS})


def register_resolvers() -> None:
    """The plan/hardware resolvers, the schema and the `model` group's presets (Hydra's ConfigStore), once per process.

    Called by `pipeline.run.configure.compose` and by `hydra_plugins/rtmpose_pipeline`, which Hydra imports
    wherever it composes `conf/` (DVC's `dvc exp run` included)."""
    if not OmegaConf.has_resolver("rtmpose_plan"):
        OmegaConf.register_new_resolver("rtmpose_plan", _plan_resolver)
    if not OmegaConf.has_resolver("rtmpose_hardware"):
        OmegaConf.register_new_resolver("rtmpose_hardware", _hardware_resolver)
    if not OmegaConf.has_resolver("rtmpose_presets"):
        OmegaConf.register_new_resolver("rtmpose_presets", _presets_resolver)
    register_schema()
    register_model_presets()


def register_model_presets() -> None:
    """`model=<preset>` for every released preset and `model=demo`, as structured configs: no files."""
    from hydra.core.config_store import ConfigStore


    store = ConfigStore.instance()
    if "model" in store.repo and f"{DEMO_MODEL}.yaml" in store.repo["model"]:
        return
    store.store(group="model", name=DEMO_MODEL,
                node=ModelConfig(checkpoint=DEMO_CHECKPOINTS["rtmpose-t_coco17_256x192"]))
    for name in all_presets():
        store.store(group="model", name=name, node=ModelConfig(preset=name, checkpoint=DEMO_CHECKPOINTS.get(name)))


def check_config(cfg: Any) -> None:
    """Cross-field checks the schema cannot express; each error names the key."""
    if not cfg.targets:
        raise ConfigError("targets is empty; list at least one, e.g. targets=[onnxruntime-fp32]")
    for name in cfg.targets:
        precision = get_target(name).precision
        if precision not in cfg.verify.tolerances:
            raise ConfigError(f"verify.tolerances has no entry for precision {precision!r} (target {name})")
    if not 7 <= cfg.export.opset <= 21:
        raise ConfigError(f"export.opset={cfg.export.opset} is outside 7..21")
    expected = make_plan(cfg.model, list(cfg.targets), cfg.out_dir,
                         {"source": cfg.calibration.source, "coco_dir": cfg.calibration.coco_dir,
                          "images_dir": cfg.calibration.images_dir}, list(cfg.extra_variants),
                         {"enabled": cfg.evaluate.enabled, "dataset_dir": cfg.evaluate.dataset_dir},
                         # A composed plan says which jobs this host leaves out: taken as is, so that a stage
                         # process loads no backend module but the one it runs (pipeline/planning/closure.py).
                         # `python -m pipeline.params --check` asks the backends again.
                         cfg.plan.get("left_out") if cfg.plan else None)
    if cfg.plan and cfg.plan != expected:
        raise ConfigError("plan does not match model/targets/out_dir; recompose with `python -m pipeline.params`")
    cfg.plan = expected
