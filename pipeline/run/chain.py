"""The whole chain for one composed config, without DVC: what `python -m pipeline` runs.

Every job is built and verified even if others fail, and a failure stays with the jobs it concerns:
a variant whose reference/export/simplify fails fails its jobs; a calibration set that cannot be
made, or a quantization that fails, fails the INT8 jobs only; a build, tune (pipeline/measure/tune.py, on
the built artifact) or verification fails its job. Each failure is recorded as the job's metrics file
(`passed: false` with the one-line reason), so the report shows it, and the results list says it. The
verified artifacts are then released (pipeline/package/release.py). The default calibration set (the
demo's COCO-format set) is made on demand where it is absent, as `dvc repro` would make it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import backends
from pipeline.check.evaluate import evaluate
from pipeline.config import RunConfig
from pipeline.core.errors import PipelineError
from pipeline.core.io import write_json
from pipeline.demo.config import default_train_demo_config
from pipeline.inputs.figures import write_coco
from pipeline.package.release import release
from pipeline.run.steps.build import build
from pipeline.run.steps.calibration import calibration
from pipeline.run.steps.export import export
from pipeline.run.steps.quantize import quantize
from pipeline.run.steps.reference import reference
from pipeline.run.steps.simplify import simplify
from pipeline.run.steps.tune import tune
from pipeline.run.steps.verify import verify

# Result statuses, in the words the summary table prints.
PASSED, FAILED, LEFT_OUT = "passed", "FAILED", "left out"


def ensure_demo_calibration_set(cfg: RunConfig) -> None:
    """Write the demo's COCO-format set (the `demo-data` stage) where the config points at it and it is absent."""

    demo = default_train_demo_config()
    wanted = Path(cfg.calibration.coco_dir)
    if cfg.calibration.source != "coco" or (wanted / "annotations.json").is_file():
        return
    if wanted.resolve() != Path(demo.demo_coco_dir).resolve():
        return  # a user's set that is missing: the calibration step names it

    print(f"calibration: {wanted} is absent; writing the demo's COCO-format set ({demo.coco_images} scenes)")
    write_coco(wanted, demo.coco_images, demo.coco_seed, tuple(demo.coco_image_size))


def _failed_jobs(cfg: RunConfig, jobs: list[str], stage: str, error: PipelineError) -> list[tuple[str, str]]:
    """Record `error` as the metrics of every job in `jobs`; their result rows."""

    for job in jobs:
        entry = cfg.plan["jobs"][job]
        write_json(entry["metrics"], {"job": job, "target": entry["target"], "precision": entry["precision"],
                                      "passed": False, "failed_stage": stage, "breaches": [str(error)]})
    return [(job, f"{FAILED}: {stage}: {error}") for job in jobs]


def run_chain(cfg: RunConfig) -> list[tuple[str, str]]:
    """Run every step of the plan; return (job, status) rows: passed, FAILED: <stage>: <reason>, left out: <why>."""

    results: list[tuple[str, str]] = []
    for variant, entry in cfg.plan["variants"].items():
        jobs = list(entry["jobs"])
        try:
            reference(cfg, variant)
            export(cfg, variant)
            simplify(cfg, variant)
        except PipelineError as exc:
            results += _failed_jobs(cfg, jobs, "prepare", exc)
            continue
        int8 = [j for j in jobs if cfg.plan["jobs"][j]["precision"] == "int8"]
        qdq = [j for j in int8 if backends.int8_from_qdq(cfg.plan["jobs"][j]["backend"])]
        try:
            if variant in cfg.plan["calibrations"]:
                ensure_demo_calibration_set(cfg)
                calibration(cfg, variant)
            if variant in cfg.plan["quantizations"]:
                try:
                    quantize(cfg, variant)
                except PipelineError as exc:
                    results += _failed_jobs(cfg, qdq, "quantize", exc)
                    jobs = [j for j in jobs if j not in qdq]
        except PipelineError as exc:
            results += _failed_jobs(cfg, int8, "calibration", exc)
            jobs = [j for j in jobs if j not in int8]
        for job in jobs:
            try:
                build(cfg, job)
            except PipelineError as exc:
                results += _failed_jobs(cfg, [job], "build", exc)
                continue
            try:
                tune(cfg, job)
            except PipelineError as exc:
                results += _failed_jobs(cfg, [job], "tune", exc)
                continue
            try:
                verify(cfg, job)
                results.append((job, PASSED))
            except PipelineError as exc:
                results.append((job, f"{FAILED}: {exc}"))

    for variant in cfg.plan["variants"]:
        release(cfg, variant)  # what passed, whatever else failed
    for variant in cfg.plan["evaluations"]:
        try:
            evaluate(cfg, variant)
            results.append((f"{variant} evaluate", PASSED))
        except PipelineError as exc:
            results.append((f"{variant} evaluate", f"{FAILED}: {exc}"))
    results += [(job, f"{LEFT_OUT}: {reason}") for job, reason in cfg.plan["left_out"].items()]
    return results


def nothing_built(cfg: RunConfig) -> str:
    """'' if the plan builds something, else the one-line reason (every requested target left out)."""
    if cfg.plan["jobs"]:
        return ""
    reasons = sorted(set(cfg.plan["left_out"].values()))
    return "nothing was built: every requested target was left out (" + "; ".join(reasons) + ")"
