"""The plan: which variants and jobs (`<variant>.<target>`) to build, and where every file goes.

The plan is part of the composed config (`plan: ${rtmpose_plan:...}` in conf/config.yaml), so
`params.yaml` carries it and `dvc.yaml` iterates over `plan.variants` and `plan.jobs` with
`foreach`, reading every path from it: paths are declared here, once. DVC composes the Hydra
config itself on `dvc exp run`; it imports `hydra_plugins/rtmpose_pipeline` first, which calls
`register_resolvers()` so that the same resolver runs there.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from omegaconf import OmegaConf

from pipeline.backends import get_target
from pipeline.errors import ConfigError
from pipeline.variants import parse_variant

# The weights dependency of a variant without a checkpoint: the code that makes synthetic weights.
SYNTHETIC_WEIGHTS_SOURCE = "pipeline/synthetic.py"


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
    }


def job_paths(out_dir: str, variant: str, target: str) -> dict[str, str]:
    root = PurePosixPath(out_dir) / variant
    return {"artifact": str(root / target), "metrics": str(root / "metrics" / f"{target}.json"),
            "tune": str(root / "tune" / f"{target}.json")}


# Which backends build INT8 from the shared Q/DQ ONNX, and which calibrate themselves (NNCF).
QDQ_BACKENDS = ("onnxruntime", "tensorrt")


def calibration_source(calibration: Any) -> str:
    """The file or folder the calibration set is read from (a DVC dependency)."""
    if calibration is None:
        return "pipeline/calibration.py"
    source = calibration.get("source", "coco")
    if source == "coco":
        return calibration.get("coco_dir") or "pipeline/calibration.py"
    if source == "images":
        return calibration.get("images_dir") or "pipeline/calibration.py"
    return "pipeline/calibration.py"  # blank: made by code alone


# Variants whose default weights are the project's trained demo checkpoint (dvc.yaml `train-demo`,
# committed, so a fresh `dvc repro` need not retrain it). Other variants use seeded synthetic weights
# unless `model.checkpoint` points at real ones.
DEMO_CHECKPOINTS: dict[str, str] = {"rtmpose-t_coco17_256x192": "checkpoints/rtmpose-t_coco17_256x192_demo.pth"}


def make_plan(model_name: str, checkpoint: str | None, targets: list[str], out_dir: str,
              calibration: Any = None, extra_variants: list[str] | None = None,
              evaluate: Any = None) -> dict[str, Any]:
    """Variants and jobs keyed by the names users type; invalid names fail with the choices.

    The model (with `model.checkpoint`) comes first; `extra_variants` (e.g. the full released
    matrix) use their demo checkpoint if they have one, else synthetic weights.
    `calibrations` and `quantizations` hold the variants that need a calibration set or a Q/DQ
    ONNX; `left_out` names jobs that cannot run on this host and why (TensorRT without a GPU).
    """
    plan: dict[str, Any] = {"variants": {}, "calibrations": {}, "quantizations": {}, "jobs": {}, "left_out": {}}
    weights = {parse_variant(model_name).name: checkpoint}
    for name in extra_variants or []:
        weights.setdefault(parse_variant(name).name, DEMO_CHECKPOINTS.get(name))
    for variant, variant_checkpoint in weights.items():
        part = _variant_plan(variant, variant_checkpoint, targets, out_dir, calibration)
        for key in plan:
            plan[key].update(part[key])
    plan["evaluations"] = _evaluations(plan["variants"], evaluate)
    return plan


def _evaluations(variants: dict[str, Any], evaluate: Any) -> dict[str, Any]:
    """The variants the optional `evaluate` stage scores: every COCO-17 one, when evaluate.enabled."""
    if evaluate is None or not evaluate["enabled"]:
        return {}
    return {name: {**entry, "dataset_dir": evaluate["dataset_dir"]} for name, entry in variants.items()
            if parse_variant(name).keypoints == "coco17"}


def _variant_plan(variant: str, checkpoint: str | None, targets: list[str], out_dir: str,
                  calibration: Any) -> dict[str, Any]:
    from pipeline.backends import availability

    from_onnx = bool(checkpoint) and str(checkpoint).lower().endswith(".onnx")
    paths = variant_paths(out_dir, variant)
    jobs: dict[str, Any] = {}
    left_out: dict[str, str] = {}
    for name in targets:
        target = get_target(name)
        job = f"{variant}.{name}"
        reason = availability(target)
        if reason:
            left_out[job] = reason
            continue
        qdq = target.precision == "int8" and target.backend in QDQ_BACKENDS
        calibrated = target.precision == "int8" and not qdq
        onnx = paths["quantized_onnx"] if qdq else paths["simplified_onnx"]
        jobs[job] = {
            "variant": variant, "target": name, "backend": target.backend, "precision": target.precision,
            "onnx": onnx, "calibration": paths["calibration"] if calibrated else "",
            # dvc.yaml can neither interpolate a list of deps nor skip an empty one, and tolerates a
            # repeated dep: jobs that calibrate depend on the set, the others repeat their ONNX.
            "calibration_dep": paths["calibration"] if calibrated else onnx,
            "reference": paths["reference"], **job_paths(out_dir, variant, name),
        }
    needs_qdq = any(j["onnx"] == paths["quantized_onnx"] for j in jobs.values())
    needs_calibration = needs_qdq or any(j["calibration"] for j in jobs.values())
    return {
        "variants": {variant: {"checkpoint": checkpoint, "weights": checkpoint or SYNTHETIC_WEIGHTS_SOURCE,
                               "from_onnx": from_onnx, "jobs": sorted(jobs), **paths}},
        "calibrations": {variant: {**paths, "source": calibration_source(calibration)}} if needs_calibration else {},
        "quantizations": {variant: paths} if needs_qdq else {},
        "jobs": jobs,
        "left_out": left_out,
    }


def _plan_resolver(model_name: str, checkpoint: Any, targets: Any, out_dir: str, calibration: Any = None,
                   extra_variants: Any = None, evaluate: Any = None) -> Any:
    def plain(value: Any) -> Any:
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value

    plan = make_plan(model_name, checkpoint if checkpoint not in (None, "None", "") else None,
                     list(plain(targets) or []), out_dir, plain(calibration), list(plain(extra_variants) or []),
                     plain(evaluate))
    # A container, not a dict: OmegaConf.resolve (which DVC calls) only splices containers in place.
    return OmegaConf.create(plan)


def _hardware_resolver() -> Any:
    """Per backend, what its artifacts are bound to: TensorRT engines to one GPU/driver/TensorRT; and
    under `cpu`, the CPU that tuned runtime settings are measured on."""
    from pipeline.backends import BACKENDS
    from pipeline.hardware import gpu_fingerprint

    from pipeline.hardware import cpu_fingerprint

    hardware = {name: gpu_fingerprint() if name == "tensorrt" else {"portable": True} for name in BACKENDS}
    # What tuned runtime settings are bound to (the `tune` stage's param): not the OS, which changes on updates.
    hardware["cpu"] = {k: v for k, v in cpu_fingerprint().items() if k != "os"}
    return OmegaConf.create(hardware)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("rtmpose_plan"):
        OmegaConf.register_new_resolver("rtmpose_plan", _plan_resolver)
    if not OmegaConf.has_resolver("rtmpose_hardware"):
        OmegaConf.register_new_resolver("rtmpose_hardware", _hardware_resolver)


def check_config(cfg: Any) -> None:
    """Cross-field checks the schema cannot express; each error names the key."""
    parse_variant(cfg.model.name)
    if not cfg.targets:
        raise ConfigError("targets is empty; list at least one, e.g. targets=[onnxruntime-fp32]")
    for name in cfg.targets:
        precision = get_target(name).precision
        if precision not in cfg.verify.tolerances:
            raise ConfigError(f"verify.tolerances has no entry for precision {precision!r} (target {name})")
    if cfg.simplify.tool not in ("onnxslim", "onnxsim", "none"):
        raise ConfigError(f"simplify.tool={cfg.simplify.tool!r}; choose onnxslim, onnxsim or none")
    if not 7 <= cfg.export.opset <= 21:
        raise ConfigError(f"export.opset={cfg.export.opset} is outside 7..21")
    expected = make_plan(cfg.model.name, cfg.model.checkpoint, list(cfg.targets), cfg.out_dir,
                         {"source": cfg.calibration.source, "coco_dir": cfg.calibration.coco_dir,
                          "images_dir": cfg.calibration.images_dir}, list(cfg.extra_variants),
                         {"enabled": cfg.evaluate.enabled, "dataset_dir": cfg.evaluate.dataset_dir})
    if cfg.plan and cfg.plan != expected:
        raise ConfigError("plan does not match model/targets/out_dir; recompose with `python -m pipeline.params`")
    cfg.plan = expected
