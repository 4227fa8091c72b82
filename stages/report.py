"""DVC stage `report`: one HTML page (and report.md, plots, overlays) over every variant x target.

    python -m stages.report [key=value ...]        # composes conf/ with Hydra overrides
    python -m stages.report --params params.yaml   # what dvc.yaml runs

Writes `<out_dir>/report/`. Failed, left-out and unbuilt jobs are rows of the report, not errors: the
exit code is 1 only when the report itself cannot be written (e.g. a bad config).
"""

from pipeline.run.cli import run_stage
from pipeline.run.steps.report import report

if __name__ == "__main__":
    raise SystemExit(run_stage(report, None))
