"""Records stage commands for the DVC tests (tests/dvc_repo.py StageLog): on PYTHONPATH with STAGE_LOG set, every
`python -m stages.<stage> ...` appends its module and arguments to that file as it starts. Nothing else changes:
the interpreter's own sitecustomize, if there is one further along sys.path, is run as well."""

import importlib.machinery
import importlib.util
import os
import sys

_log = os.environ.get("STAGE_LOG")
_argv = getattr(sys, "orig_argv", [])
if _log and "-m" in _argv[1:-1] and _argv[_argv.index("-m") + 1].startswith("stages."):
    with open(_log, "a", encoding="utf-8") as _file:
        _file.write(" ".join(_argv[_argv.index("-m") + 1:]) + "\n")

_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
