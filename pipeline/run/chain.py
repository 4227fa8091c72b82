"""The whole chain for one composed config, without DVC: what `python -m pipeline` runs.

Every job is built and verified even if others fail, and a failure stays with the jobs it concerns:
a variant whose reference/export/simplify fails fails its jobs; a calibration set that cannot be
made, or a quantization that fails, fails the INT8 jobs only; a build, tune (pipeline/measure/tune.py, on
the built artifact) or verification fails its job. Each failure is recorded as the job's metrics file
(`passed: false` with the one-line reason), so the report shows it, and the results list says it. The
verified artifacts are then released (pipeline/package/release.py). Any exception counts, not only the
project's own errors: a runtime or tool that raises its own (onnxruntime refusing a corrupt file, OpenVINO
failing to compile) fails the jobs it concerns with its one line (pipeline.core.errors.one_line), and the
rest of the chain goes on; Ctrl-C (KeyboardInterrupt, not an Exception) still stops it. The default
calibration set (the demo's COCO-format set) is made on demand where it is absent, as `dvc repro` would.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import backends
from pipeline.check.evaluate import evaluate
from pipeline.config import RunConfig
from pipeline.core.errors import VerificationError, one_line
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


def _failed_jobs(cfg: RunConfig, jobs: list[str], stage: str, exc: Exception) -> list[tuple[str, str]]:
    """Record `exc` (its one line, pipeline.core.errors.one_line) as the metrics of every job in `jobs`; their
    result rows."""

    error = one_line(exc)
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
        except Exception as exc:
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
                except Exception as exc:
                    results += _failed_jobs(cfg, qdq, "quantize", exc)
                    jobs = [j for j in jobs if j not in qdq]
        except Exception as exc:
            results += _failed_jobs(cfg, int8, "calibration", exc)
            jobs = [j for j in jobs if j not in int8]
        for job in jobs:
            try:
                build(cfg, job)
            except Exception as exc:
                results += _failed_jobs(cfg, [job], "build", exc)
                continue
            try:
                tune(cfg, job)
            except Exception as exc:
                results += _failed_jobs(cfg, [job], "tune", exc)
                continue
            try:
                verify(cfg, job)
                results.append((job, PASSED))
            except VerificationError as exc:  # verify wrote the metrics with every breach
                results.append((job, f"{FAILED}: {exc}"))
            except Exception as exc:  # the runtime could not run the artifact: no metrics were written
                results += _failed_jobs(cfg, [job], "verify", exc)

    for variant in cfg.plan["variants"]:
        try:
            release(cfg, variant)  # what passed, whatever else failed
        except Exception as exc:
            results.append((f"{variant} release", f"{FAILED}: {one_line(exc)}"))
    for variant in cfg.plan["evaluations"]:
        try:
            evaluate(cfg, variant)
            results.append((f"{variant} evaluate", PASSED))
        except Exception as exc:
            results.append((f"{variant} evaluate", f"{FAILED}: {one_line(exc)}"))
    results += [(job, f"{LEFT_OUT}: {reason}") for job, reason in cfg.plan["left_out"].items()]
    return results


def nothing_built(cfg: RunConfig) -> str:
    """'' if the plan builds something, else the one-line reason (every requested target left out)."""
    if cfg.plan["jobs"]:
        return ""
    reasons = sorted(set(cfg.plan["left_out"].values()))
    return "nothing was built: every requested target was left out (" + "; ".join(reasons) + ")"
