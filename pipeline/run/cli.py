"""The entry-point shell shared by every stage script: parse, load config, run one step, exit code.

`python stages/<stage>.py <variant-or-job> [key=value ...]` composes `conf/` with the overrides;
`python stages/<stage>.py <variant-or-job> --params params.yaml` (what dvc.yaml runs) reads the
composed params instead. Errors print one line, `error: ...`, and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.run.configure import load_config


def run_stage(step: Callable[..., Any], what: str | None, argv: list[str] | None = None) -> int:
    """`what` names the positional (variant or job) the step takes; None for a step over the whole plan."""
    parser = argparse.ArgumentParser(description=(step.__doc__ or step.__name__).strip().splitlines()[0])
    if what:
        parser.add_argument(what, help=f"the {what} to process, as named in the plan")
    parser.add_argument("--params", help="read this composed params file instead of composing conf/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=rtmpose-m_coco17_256x192")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.overrides, args.params)
        step(cfg, getattr(args, what)) if what else step(cfg)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
