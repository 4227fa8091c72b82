"""DVC stage `report`: one HTML page (and report.md, plots, overlays) over every variant x target.

    python -m stages.report [key=value ...]        # composes conf/ with Hydra overrides
    python -m stages.report --params params.yaml   # what dvc.yaml runs

Writes `<out_dir>/report/`. Failed, left-out and unbuilt jobs are rows of the report, not errors: the
exit code is 1 only when the report itself cannot be written (e.g. a bad config).
"""

import argparse
import sys

from pipeline.errors import PipelineError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--params", help="read this composed params file instead of composing conf/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. out_dir=/tmp/out")
    args = parser.parse_args(argv)
    from pipeline.config import load_config
    from pipeline.report import build_report, report_dir, summary_line

    try:
        cfg = load_config(args.overrides, args.params)
        print(summary_line(build_report(cfg, report_dir(cfg))))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
