"""`python -m pipeline [overrides]`: the whole chain for the composed config, as a Hydra app.

    python -m pipeline                                   # embedded default
    python -m pipeline model=rtmpose-m_coco17_256x192 out_dir=/tmp/out
    python -m pipeline -m model=rtmpose-t_coco17_256x192,rtmpose-s_coco17_256x192 targets=[openvino-fp32]

Every target is built and verified even if an earlier one fails; the exit code is non-zero if any did.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pipeline.plan import register_resolvers

register_resolvers()


def run_chain(raw: DictConfig) -> list[tuple[str, str]]:
    from pipeline import steps
    from pipeline.config import validate
    from pipeline.errors import PipelineError

    cfg = validate(raw)
    results: list[tuple[str, str]] = []
    for variant in cfg.plan["variants"]:
        steps.reference(cfg, variant)
        steps.export(cfg, variant)
        steps.simplify(cfg, variant)
        if variant in cfg.plan["calibrations"]:
            steps.calibration(cfg, variant)
        if variant in cfg.plan["quantizations"]:
            steps.quantize(cfg, variant)
    for job in cfg.plan["jobs"]:
        try:
            steps.tune(cfg, job)
            steps.build(cfg, job)
            steps.verify(cfg, job)
            results.append((job, "passed"))
        except PipelineError as exc:
            results.append((job, f"FAILED: {exc}"))
    for variant in cfg.plan["evaluations"]:
        try:
            steps.evaluate(cfg, variant)
            results.append((f"{variant} evaluate", "passed"))
        except PipelineError as exc:
            results.append((f"{variant} evaluate", f"FAILED: {exc}"))
    results += [(job, f"left out: {reason}") for job, reason in cfg.plan["left_out"].items()]
    return results


def write_report(raw: DictConfig) -> str:
    from pipeline.config import validate
    from pipeline.report import build_report, report_dir, summary_line

    cfg = validate(raw)
    return summary_line(build_report(cfg, report_dir(cfg)))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(raw: DictConfig) -> None:
    import time

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pipeline.errors import PipelineError
    from pipeline.sweep import run_isolated, write_results

    hydra_cfg = HydraConfig.get()
    start = time.perf_counter()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        results = run_isolated(raw, hydra_cfg.runtime.output_dir)  # a fresh process per job: nothing leaks between sweep jobs
    else:
        try:
            results = run_chain(raw)
            report = write_report(raw)  # failed jobs are rows of the report, so it comes after them all
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        print(report)
    write_results(hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), results, time.perf_counter() - start)
    width = max(len(job) for job, _ in results)
    for job, status in results:
        print(f"{job:<{width}}  {status}")
    if any(status.startswith("FAILED") for _, status in results) and hydra_cfg.mode != RunMode.MULTIRUN:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
