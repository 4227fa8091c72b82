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
    }


def job_paths(out_dir: str, variant: str, target: str) -> dict[str, str]:
    root = PurePosixPath(out_dir) / variant
    return {"artifact": str(root / target), "metrics": str(root / "metrics" / f"{target}.json")}


def make_plan(model_name: str, checkpoint: str | None, targets: list[str], out_dir: str) -> dict[str, Any]:
    """Variants and jobs keyed by the names users type; invalid names fail with the choices."""
    variant = parse_variant(model_name).name
    from_onnx = bool(checkpoint) and str(checkpoint).lower().endswith(".onnx")
    paths = variant_paths(out_dir, variant)
    variants = {variant: {"weights": checkpoint or SYNTHETIC_WEIGHTS_SOURCE, "from_onnx": from_onnx, **paths}}
    jobs: dict[str, Any] = {}
    for name in targets:
        target = get_target(name)
        jobs[f"{variant}.{name}"] = {
            "variant": variant, "target": name, "backend": target.backend, "precision": target.precision,
            "onnx": paths["simplified_onnx"], "reference": paths["reference"], **job_paths(out_dir, variant, name),
        }
    return {"variants": variants, "jobs": jobs}


def _plan_resolver(model_name: str, checkpoint: Any, targets: Any, out_dir: str) -> Any:
    names = list(targets) if targets is not None else []
    plan = make_plan(model_name, checkpoint if checkpoint not in (None, "None", "") else None, names, out_dir)
    # A container, not a dict: OmegaConf.resolve (which DVC calls) only splices containers in place.
    return OmegaConf.create(plan)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("rtmpose_plan"):
        OmegaConf.register_new_resolver("rtmpose_plan", _plan_resolver)


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
    expected = make_plan(cfg.model.name, cfg.model.checkpoint, list(cfg.targets), cfg.out_dir)
    if cfg.plan and cfg.plan != expected:
        raise ConfigError("plan does not match model/targets/out_dir; recompose with `python -m pipeline.params`")
    cfg.plan = expected
