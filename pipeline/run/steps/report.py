"""Step `report`: the report over every variant x target."""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.report import build_report, report_dir, summary_line


def report(cfg: RunConfig) -> None:
    """Write the report over every variant x target (failed and left-out jobs are rows, not errors)."""

    print(summary_line(build_report(cfg, report_dir(cfg))))
