"""`python -m pipeline [overrides]`: the whole chain for the composed config, as a Hydra app.

    python -m pipeline                                   # embedded default
    python -m pipeline model.checkpoint=my_rtmpose.pth out_dir=/tmp/out
    python -m pipeline -m model=rtmpose-t_coco17_256x192,rtmpose-s_coco17_256x192 targets=[openvino-fp32]

Every target is built and verified even if an earlier one fails (pipeline/run/chain.py); the exit code
is non-zero if any job failed, if nothing could be built, or, in a sweep, if any sweep job failed.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pipeline.core.errors import PipelineError, fail
from pipeline.planning.plan import register_resolvers
from pipeline.report import build_report, report_dir, summary_line
from pipeline.run.chain import FAILED, nothing_built, run_chain
from pipeline.run.configure import validate
from pipeline.run.sweep import run_isolated, write_results

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(raw: DictConfig) -> None:
    import time

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode


    hydra_cfg = HydraConfig.get()
    start = time.perf_counter()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        results = run_isolated(raw, hydra_cfg.runtime.output_dir)  # a fresh process per job: nothing leaks between sweep jobs
    else:

        try:
            cfg = validate(raw)
            empty = nothing_built(cfg)
            if empty:
                raise PipelineError(empty)
            results = run_chain(cfg)
            report = summary_line(build_report(cfg, report_dir(cfg)))  # failed jobs are rows of the report
        except Exception as exc:  # the chain keeps job failures to their jobs; this is what stops the whole run
            raise SystemExit(fail(exc)) from None
        print(report)
    write_results(hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), results, time.perf_counter() - start)
    width = max(len(job) for job, _ in results)
    for job, status in results:
        print(f"{job:<{width}}  {status}")
    if any(status.startswith(FAILED) for _, status in results) and hydra_cfg.mode != RunMode.MULTIRUN:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
