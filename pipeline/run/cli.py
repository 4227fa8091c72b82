"""The entry-point shell shared by every stage script: parse, load config, run one step, exit code.

`python stages/<stage>.py <variant-or-job> [key=value ...]` composes `conf/` with the overrides;
`python stages/<stage>.py <variant-or-job> --params params.yaml` (what dvc.yaml runs) reads the
composed params instead. Errors print one line, `error: ...`, and exit 1: the project's own, and any other
exception (a runtime's, a tool's, a bug) as its package, type and first line; `PIPELINE_DEBUG=1` re-raises
those with their traceback, for a bug report.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pipeline.core.errors import fail
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
    except Exception as exc:  # a runtime's or tool's own error is one line too (pipeline.core.errors.fail)
        return fail(exc)
    return 0
